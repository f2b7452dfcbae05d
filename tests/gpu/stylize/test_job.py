"""The GPU job end to end on the CPU: real ffmpeg, real mpiexec, a tiny seeded style network.

Launches are the slow part (each rank imports torch), so the job folders and runs are
module-scoped fixtures shared by the tests that read them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gpu import jobdir
from gpu.ffmpeg import FFmpegError, run_ffmpeg
from gpu.jobdir import ChunkSpec, EncodeSettings, InputFormat, JobManifest
from gpu.model import build_model, load_style_model, save_weights
from gpu.stylize.colour import rgb_to_yuv420
from gpu.stylize.defaults import (
    AUTO_COMPILE_MEGAPIXEL_FRAMES,
    default_batch_size,
    default_decoder_threads,
    default_encoder_threads,
    default_encoders,
    resolve_compile_mode,
)
from gpu.stylize.errors import CompileError, JobInputError
from gpu.stylize.frames import FrameLayout
from gpu.stylize.metrics import CpuTicks, host_cpu_busy_fraction, read_cpu_ticks
from gpu.stylize.pipeline import LANE_DONE, Claim, Pipe, RankWork, StageClock
from gpu.stylize.plan import plan_job, read_valid_manifest
from gpu.stylize.stylizer import PaintControls, Stylizer, warm_up_or_fall_back
from gpu.video_io import (
    FrameWriter,
    RawFrameReader,
    decode_argv,
    encode_argv,
    even_size,
    yuv420_frame_bytes,
)
from tests.stylize_jobs import (
    FFMPEG,
    LAUNCH_TIMEOUT,
    REPO,
    RGB_CHUNKS,
    decode,
    decode_output,
    launch,
    make_job,
    ok,
    parameter_sets,
    raw_twin,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(build_model("stylenet", width=8, blocks=1, head_width=8), path)
    return path


@pytest.fixture(scope="module")
def even_job(tmp_path_factory: pytest.TempPathFactory,
             model_file: Path) -> tuple[Path, JobManifest]:
    folder = tmp_path_factory.mktemp("even_job")
    return folder, make_job(folder, 66, 50, [4, 3, 5, 2, 4], model_file)


@pytest.fixture(scope="module")
def runs_by_ranks(tmp_path_factory: pytest.TempPathFactory,
                  even_job: tuple[Path, JobManifest]) -> dict[int, Path]:
    """The even job stylized by 1 (a plain process: MPI singleton), 2, 3 and 4 ranks."""
    input_dir, _ = even_job
    outputs = {}
    for ranks in (1, 2, 3, 4):
        output_dir = tmp_path_factory.mktemp(f"out_{ranks}_ranks")
        ok(launch(input_dir, output_dir, None if ranks == 1 else ranks))
        outputs[ranks] = output_dir
    return outputs


@pytest.mark.slow
def test_every_rank_count_accounts_for_every_frame(
    runs_by_ranks: dict[int, Path], even_job: tuple[Path, JobManifest]
) -> None:
    input_dir, manifest = even_job
    for ranks, output_dir in runs_by_ranks.items():
        reports = jobdir.read_reports(output_dir)
        assert [r.index for r in reports] == [c.index for c in manifest.chunks]
        for chunk, report in zip(manifest.chunks, reports, strict=True):
            decoded = decode_output(output_dir, manifest, chunk)
            assert len(decoded) == report.frames == chunk.frames, (ranks, chunk)
        summary = jobdir.read_summary(output_dir)
        assert summary.total_frames == summary.frames_processed == manifest.total_frames
        assert summary.chunks == len(manifest.chunks) and summary.chunks_skipped == 0
        assert [r.rank for r in summary.ranks] == list(range(ranks))
        assert sum(r.chunks for r in summary.ranks) == len(manifest.chunks)
        assert sum(r.frames for r in summary.ranks) == manifest.total_frames
        for rank in summary.ranks:  # each rank's own count matches the reports it wrote
            mine = [r for r in reports if r.rank == rank.rank]
            assert (rank.chunks, rank.frames) == (len(mine), sum(r.frames for r in mine))
        assert summary.device == "cpu" and summary.fps > 0
        assert "Open MPI" in summary.mpi_library_version and summary.mpi4py_version
        assert not list((output_dir / jobdir.CHUNKS_DIR).glob(".*")), "temporary files left"


@pytest.mark.slow
def test_output_is_stylized_and_the_same_whatever_the_rank_count(
    runs_by_ranks: dict[int, Path], even_job: tuple[Path, JobManifest]
) -> None:
    input_dir, manifest = even_job
    for chunk in manifest.chunks:
        source = decode(input_dir / chunk.file, manifest.width, manifest.height)
        outputs = {n: decode_output(out, manifest, chunk) for n, out in runs_by_ranks.items()}
        change = np.abs(outputs[1].astype(int) - source).mean()
        assert change > 20, f"chunk {chunk.index} barely differs from its input ({change:.1f})"
        # Each frame went through the network on its own: a moving input gives moving output.
        assert not np.array_equal(outputs[1][0], outputs[1][-1])
        for ranks in (2, 3):
            gap = np.abs(outputs[ranks].astype(int) - outputs[1]).mean()
            assert gap < 1.0, f"chunk {chunk.index}: {ranks} ranks differ from 1 by {gap:.2f}"


@pytest.fixture(scope="module")
def runs_with_chunks_in_flight(tmp_path_factory: pytest.TempPathFactory,
                               even_job: tuple[Path, JobManifest]) -> dict[tuple[int, int], Path]:
    """The even job with several chunks in flight per rank: (ranks, encoders) -> output.

    Two ranks of three lanes have more lanes than the job has chunks: some lanes get none.
    """
    input_dir, _ = even_job
    outputs = {}
    for ranks, encoders in ((1, 2), (2, 3)):
        output_dir = tmp_path_factory.mktemp(f"out_{ranks}_ranks_{encoders}_encoders")
        ok(launch(input_dir, output_dir, None if ranks == 1 else ranks,
                  "--encoders", str(encoders)))
        outputs[ranks, encoders] = output_dir
    return outputs


@pytest.mark.slow
def test_raw_chunks_stylize_exactly_like_the_chunks_they_were_decoded_from(
    runs_by_ranks: dict[int, Path], even_job: tuple[Path, JobManifest], tmp_path: Path
) -> None:
    """The job reads raw chunks itself, FFmpeg-free: same frames in, so the same output."""
    input_dir, manifest = even_job
    twin = raw_twin(input_dir, tmp_path / "raw", manifest)
    proc = ok(launch(tmp_path / "raw", tmp_path / "out", 2))
    assert "66x50 gbrp rawvideo" in proc.stdout
    reports = jobdir.read_reports(tmp_path / "out")
    assert [(r.index, r.frames) for r in reports] == [(c.index, c.frames) for c in twin.chunks]
    summary = jobdir.read_summary(tmp_path / "out")
    assert summary.total_frames == summary.frames_processed == manifest.total_frames
    assert sum(r.frames for r in summary.ranks) == manifest.total_frames
    for chunk in twin.chunks:
        assert np.array_equal(decode_output(tmp_path / "out", twin, chunk),
                              decode_output(runs_by_ranks[2], manifest, chunk)), chunk
    assert not list((tmp_path / "out" / jobdir.CHUNKS_DIR).glob(".*")), "temporary files left"


def test_raw_frame_reader_reads_whole_frames_and_refuses_a_partial_one(tmp_path: Path) -> None:
    per_frame = yuv420_frame_bytes(66, 50)
    frames = np.arange(5 * per_frame, dtype=np.uint64).astype(np.uint8).reshape(5, per_frame)
    chunk = tmp_path / "00000.yuv"
    chunk.write_bytes(frames.tobytes())
    batch = np.empty((2, per_frame), np.uint8)
    with RawFrameReader(chunk, 66, 50, "yuv420p") as reader:
        assert reader.frame_bytes == per_frame
        assert reader.read_into(batch) == 2 and np.array_equal(batch, frames[:2])
        assert reader.read_into(batch) == 2 and np.array_equal(batch, frames[2:4])
        assert reader.read_into(batch) == 1 and np.array_equal(batch[0], frames[4])
        assert reader.read_into(batch) == 0 and reader.frames_read == 5
        with pytest.raises(ValueError, match="expected a C-contiguous uint8 buffer of 4950 "
                                             "bytes per frame"):
            reader.read_into(np.empty((2, per_frame - 1), np.uint8))
    chunk.write_bytes(frames.tobytes()[:-10])  # truncated inside its last frame
    with RawFrameReader(chunk, 66, 50, "yuv420p") as reader, \
            pytest.raises(FFmpegError, match=f"raw chunk {chunk} ends inside a frame: frame 4 "
                                             f"has 4940 of its 4950 bytes \\(yuv420p 66x50\\)"):
        while reader.read_into(batch):
            pass


@pytest.mark.slow
def test_chunks_in_flight_change_neither_frames_nor_pictures(
    runs_with_chunks_in_flight: dict[tuple[int, int], Path], runs_by_ranks: dict[int, Path],
    even_job: tuple[Path, JobManifest],
) -> None:
    _, manifest = even_job
    for (ranks, encoders), output_dir in runs_with_chunks_in_flight.items():
        reports = jobdir.read_reports(output_dir)
        assert [r.index for r in reports] == [c.index for c in manifest.chunks]
        summary = jobdir.read_summary(output_dir)
        assert summary.total_frames == summary.frames_processed == manifest.total_frames
        assert [r.encoders for r in summary.ranks] == [encoders] * ranks
        for rank in summary.ranks:
            mine = [r for r in reports if r.rank == rank.rank]
            assert (rank.chunks, rank.frames) == (len(mine), sum(r.frames for r in mine))
        for chunk, report in zip(manifest.chunks, reports, strict=True):
            decoded = decode_output(output_dir, manifest, chunk)
            assert len(decoded) == report.frames == chunk.frames, (ranks, encoders, chunk)
            # x264 threads differ with the lane count, so compare pictures, not bytes.
            gap = np.abs(decoded.astype(int) - decode_output(runs_by_ranks[1], manifest, chunk))
            assert gap.mean() < 1.0, (ranks, encoders, chunk)
        assert not list((output_dir / jobdir.CHUNKS_DIR).glob(".*")), "temporary files left"


def rgb_twin(yuv_dir: Path, folder: Path, manifest: JobManifest) -> JobManifest:
    """A copy of a job of 4:2:0 chunks whose chunks FFmpeg converted to planar RGB, as the job
    itself converts them: bilinear chroma with H.264's siting, careful rounding."""
    matrix = manifest.input_format.matrix
    for chunk in manifest.chunks:
        (folder / chunk.file).parent.mkdir(parents=True, exist_ok=True)
        run_ffmpeg([FFMPEG, "-v", "error", "-i", str(yuv_dir / chunk.file),
                    "-vf", f"scale=in_color_matrix={matrix}:in_range=tv:in_chroma_loc=left"
                           ":flags=accurate_rnd+full_chroma_int+bilinear",
                    "-c:v", "ffv1", "-pix_fmt", "gbrp", "-f", "matroska", str(folder / chunk.file)])
    twin = replace(manifest, input_format=RGB_CHUNKS)
    jobdir.write_manifest(folder, twin)
    (folder / jobdir.MODEL_NAME).write_bytes((yuv_dir / jobdir.MODEL_NAME).read_bytes())
    return twin


@pytest.mark.slow
def test_yuv420p_chunks_stylize_like_their_rgb_conversion(tmp_path: Path,
                                                          model_file: Path) -> None:
    """BT.709 4:2:0 chunks, converted to RGB by the job itself, stylize to what the same
    chunks converted by FFmpeg and handed over as planar RGB do.

    Nearly lossless x264 (CRF 4) keeps encoding noise out of the comparison: the two inputs
    differ by 0.1 levels (rounding), the outputs by about 0.3; with the BT.601 matrix instead
    the job's outputs are 1.7 off. The two runs also show the FFmpeg thread counts: by
    default each chunk's x264 gets the rank's threads over its chunks in flight."""
    yuv_dir, rgb_dir = tmp_path / "yuv", tmp_path / "rgb"
    manifest = replace(make_job(yuv_dir, 66, 50, [4, 3, 5], model_file,
                                InputFormat("yuv420p", "bt709")),
                       encode=EncodeSettings(crf=4, preset="ultrafast"))
    jobdir.write_manifest(yuv_dir, manifest)
    twin = rgb_twin(yuv_dir, rgb_dir, manifest)
    ok(launch(rgb_dir, tmp_path / "rgb_out", None, "--encoder-threads", "3"))
    ok(launch(yuv_dir, tmp_path / "yuv_out", None, "--threads", "4", "--encoders", "2"))
    summary = jobdir.read_summary(tmp_path / "yuv_out")
    assert (summary.input_pix_fmt, summary.input_matrix) == ("yuv420p", "bt709")
    rank = summary.ranks[0]
    assert (rank.threads, rank.encoders, rank.encoder_threads, rank.decoder_threads) == \
        (4, 2, 4, 2)
    rank = jobdir.read_summary(tmp_path / "rgb_out").ranks[0]
    assert (rank.threads, rank.encoders, rank.encoder_threads, rank.decoder_threads) == \
        (1, 1, 3, 1)
    assert summary.total_frames == manifest.total_frames
    for chunk in manifest.chunks:
        from_rgb = decode_output(tmp_path / "rgb_out", twin, chunk).astype(int)
        from_yuv = decode_output(tmp_path / "yuv_out", manifest, chunk).astype(int)
        assert len(from_yuv) == chunk.frames
        gap = np.abs(from_yuv - from_rgb).mean()
        assert gap < 0.7, f"chunk {chunk.index}: {gap:.2f} from the RGB chunks' output"


def test_bad_encoder_threads_is_a_clear_error(even_job: tuple[Path, JobManifest],
                                              tmp_path: Path) -> None:
    input_dir, _ = even_job
    proc = launch(input_dir, tmp_path / "out", None, "--encoder-threads", "-1")
    assert proc.returncode == 2
    assert "--encoder-threads must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_summary_reports_warm_up_steady_rate_and_device_busy(
    runs_by_ranks: dict[int, Path]
) -> None:
    summary = jobdir.read_summary(runs_by_ranks[2])
    assert summary.compile == "none" and summary.warmup_seconds == 0  # nothing to warm on CPU
    assert 0 < summary.run_seconds < summary.wall_seconds
    assert summary.steady_fps >= summary.fps > 0
    assert 0 < summary.device_busy_fraction <= 1
    assert (summary.input_pix_fmt, summary.input_matrix) == ("gbrp", None)
    for rank in summary.ranks:
        assert (rank.device_id, rank.threads, rank.encoders, rank.compile) == ("cpu", 1, 1, "none")
        assert (rank.encoder_threads, rank.decoder_threads) == (1, 1)
        assert 0 < rank.run_seconds <= summary.run_seconds
        assert min(rank.decode_seconds, rank.infer_seconds, rank.encode_seconds) > 0
        # On the CPU the device's time is the network calls' time.
        assert rank.device_seconds == pytest.approx(rank.infer_seconds, abs=0.01)
        assert rank.device_busy_fraction == pytest.approx(rank.device_seconds / rank.run_seconds,
                                                          abs=0.01)
        assert isinstance(rank.host_cpu_busy_fraction, float)  # Linux: /proc/stat is there
        assert 0 <= rank.host_cpu_busy_fraction <= 1
        assert None not in (rank.decode_cpu_seconds, rank.infer_cpu_seconds,
                            rank.encode_cpu_seconds)
    # Two ranks on one host: its cores count once.
    assert summary.encode_core_share == pytest.approx(
        sum(r.encode_cpu_seconds for r in summary.ranks)
        / (summary.ranks[0].host_cores * summary.run_seconds), abs=1e-3)


def test_summaries_written_before_and_after_the_new_fields_both_read(tmp_path: Path) -> None:
    older = {"total_frames": 5, "chunks": 1, "chunks_skipped": 0, "frames_processed": 5,
             "wall_seconds": 1.0, "fps": 5.0, "device": "cpu",
             "ranks": [{"rank": 0, "host": "h", "device": "cpu", "chunks": 1, "frames": 5}]}
    (tmp_path / jobdir.SUMMARY_NAME).write_text(json.dumps(older))
    summary = jobdir.read_summary(tmp_path)
    assert summary.compile == "none" and summary.steady_fps == 0 and summary.ranks[0].encoders == 0
    assert summary.ranks[0].host_cpu_busy_fraction is None
    assert (summary.encoder, summary.encoder_crf, summary.encode_core_share) == ("", None, None)
    assert summary.ranks[0].encode_cpu_seconds is None and summary.ranks[0].host_cores == 0
    assert (summary.strength, summary.stroke_scale, summary.preserve_colors) == (None, None, False)
    newer = {**older, "some_later_field": 1,
             "ranks": [{**older["ranks"][0], "some_later_rank_field": 2}]}
    (tmp_path / jobdir.SUMMARY_NAME).write_text(json.dumps(newer))
    assert jobdir.read_summary(tmp_path) == summary


PROC_STAT_TEXT = """\
cpu  100 20 30 400 50 6 7 8 90 10
cpu0 50 10 15 200 25 3 4 4 45 5
intr 12345 0 0
"""


@pytest.mark.slow
def test_held_claims_keep_a_network_bound_rank_to_few_chunks_and_still_finish(
    runs_by_ranks: dict[int, Path], even_job: tuple[Path, JobManifest], tmp_path: Path
) -> None:
    input_dir, manifest = even_job
    output_dir = tmp_path / "out"
    proc = ok(launch(input_dir, output_dir, 2, "--encoders", "3", "--max-waiting-batches", "1"))
    assert "a new chunk only while at most 1 batches wait" in proc.stdout
    summary = jobdir.read_summary(output_dir)
    assert summary.frames_processed == manifest.total_frames
    assert sum(r.chunks for r in summary.ranks) == len(manifest.chunks)
    for chunk in manifest.chunks:
        gap = np.abs(decode_output(output_dir, manifest, chunk).astype(int)
                     - decode_output(runs_by_ranks[1], manifest, chunk)).mean()
        assert gap < 1.0, f"chunk {chunk.index} differs from the 1-rank run by {gap:.2f}"


def serve_in_order(max_waiting_batches: int) -> list[str]:
    """What a rank's main thread answers, in order, when lane A's claim and two of its batches
    are queued before lane B's claim, and two more batches and both lanes' ends after it."""
    events: list[str] = []

    class Reply:
        def __init__(self, name: str) -> None:
            self.name = name

        def put(self, item: object) -> None:
            # A lane's claim gets a chunk; a batch gets back (stylized frames, count).
            chunk = isinstance(item, SimpleNamespace)
            events.append(f"{self.name} gets chunk {item.index}" if chunk else self.name)

    def batch(name: str) -> SimpleNamespace:
        return SimpleNamespace(frames=None, out=None, count=1, clock=StageClock(),
                               buffers=SimpleNamespace(decoded=SimpleNamespace(give=id)),
                               reply=Reply(name))

    claims = iter(range(10))
    work = RankWork(stylizer=lambda frames, out, count: 0.0,
                    counter=SimpleNamespace(claim=lambda: next(claims)),
                    plan=SimpleNamespace(pending=list(range(10)), manifest=SimpleNamespace(
                        chunks=[SimpleNamespace(index=n) for n in range(10)])),
                    placement=SimpleNamespace(rank=0), fault_rank=None, fault_after_chunks=0,
                    max_waiting_batches=max_waiting_batches)
    requests = Pipe(threading.Event())
    for item in (Claim(Reply("A"), None), batch("a1"), batch("a2"), Claim(Reply("B"), None),
                 batch("a3"), batch("a4"), LANE_DONE, LANE_DONE):
        requests.put(item)
    work.serve(requests, lanes=2)
    return events


def test_a_claim_waits_while_more_batches_than_allowed_wait_for_the_network() -> None:
    # Unlimited: B starts a chunk as soon as its claim comes up.
    assert serve_in_order(0) == ["A gets chunk 0", "a1", "a2", "B gets chunk 1", "a3", "a4"]
    # At most one waiting: A's claim is answered although seven items wait (the rank has no
    # chunk in flight); B's is held until only one item is left behind it.
    assert serve_in_order(1) == ["A gets chunk 0", "a1", "a2", "a3", "a4", "B gets chunk 1"]


def test_cpu_ticks_come_from_the_aggregate_line_of_proc_stat(tmp_path: Path) -> None:
    # Busy: user, nice, system, irq, softirq, steal; idle: idle, iowait; guest is in user.
    expected = CpuTicks(busy=100 + 20 + 30 + 6 + 7 + 8, idle=400 + 50)
    assert read_cpu_ticks(PROC_STAT_TEXT) == expected
    (tmp_path / "stat").write_text(PROC_STAT_TEXT)
    assert read_cpu_ticks(tmp_path / "stat") == expected
    assert read_cpu_ticks(tmp_path / "missing") is None  # no /proc/stat: not Linux
    assert read_cpu_ticks("intr 12345 0 0\n") is None
    assert read_cpu_ticks("cpu  100 20 30\n") is None


def test_host_cpu_busy_fraction_is_the_busy_share_of_the_ticks_between_snapshots() -> None:
    start = CpuTicks(busy=1000, idle=3000)
    assert host_cpu_busy_fraction(start, CpuTicks(busy=1060, idle=3040)) == pytest.approx(0.6)
    assert host_cpu_busy_fraction(start, CpuTicks(busy=1000, idle=3100)) == 0
    assert host_cpu_busy_fraction(start, start) is None  # no tick elapsed
    assert host_cpu_busy_fraction(None, start) is None
    assert host_cpu_busy_fraction(start, None) is None


def test_compile_encoder_and_thread_defaults() -> None:
    minutes_of_1080p30 = [1920 * 1080 / 1e6 * 30 * 60 * m for m in (0.5, 10, 20)]
    # Auto compiles only on CUDA and only where the compile is won back: a 30 s clip (the
    # compile alone would take longer than the job) and 10 minutes stay eager, 20 do not...
    assert [resolve_compile_mode("auto", "cuda", w) for w in minutes_of_1080p30] == \
        ["none", "none", "reduce-overhead"]
    # ...unless two ranks share them, and never on the CPU.
    assert resolve_compile_mode("auto", "cuda", minutes_of_1080p30[2] / 2) == "none"
    assert resolve_compile_mode("auto", "cpu", 1e9) == "none"
    assert resolve_compile_mode("auto", "cuda", AUTO_COMPILE_MEGAPIXEL_FRAMES) == "reduce-overhead"
    assert resolve_compile_mode("max-autotune") == "max-autotune"
    assert resolve_compile_mode("none", "cuda", 1e9) == "none"
    assert [default_encoders(t) for t in (1, 2, 4, 8, 16)] == [1, 1, 2, 4, 8]
    # Each chunk's x264 may use all of the rank's threads (why: docs/performance.md).
    assert [default_encoder_threads(t) for t in (1, 2, 4, 8, 16)] == [1, 2, 4, 8, 16]
    assert [default_decoder_threads(t) for t in (1, 2, 16, 64)] == [1, 2, 2, 2]


def test_batch_size_default_holds_at_most_sixteen_1080p_frames_on_cuda() -> None:
    sizes = [(720, 720), (1920, 1080), (2560, 1440), (3840, 2160), (7680, 4320), (16384, 16384)]
    assert [default_batch_size("cuda", w, h) for w, h in sizes] == [16, 16, 9, 4, 1, 1]
    assert {default_batch_size("cpu", w, h) for w, h in sizes} == {2}


def test_failed_compile_is_a_clear_error(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling for real takes a minute on this CPU; what matters here is the message."""
    stylizer = Stylizer(load_style_model(model_file), torch.device("cpu"), FrameLayout(66, 50),
                        "default")
    assert stylizer.full_batches, "compiled code is for one shape: short batches must be padded"

    def broken_compile(frames: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler")

    monkeypatch.setattr(stylizer, "_convert", broken_compile)
    with pytest.raises(CompileError, match=r"torch.compile\(mode='default'\) failed on the "
                                           r"warm-up batch \(3x50x66 gbrp\): RuntimeError: "
                                           r"InvalidCxx(.|\n)*--compile none"):
        stylizer.warm_up(3)


def test_auto_compile_that_fails_goes_on_eager(model_file: Path) -> None:
    """``--compile auto`` asks for speed, so its failed compile costs the job nothing (and the
    eager network paints as asked); a mode asked for by name still ends the job (above)."""
    model = load_style_model(model_file)
    frames = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, (3, FrameLayout(66, 50).frame_bytes), dtype=np.uint8))
    eager_out = torch.empty((3, 66 * 50 * 3 // 2), dtype=torch.uint8)
    paint = PaintControls(stroke_scale=3.0, preserve_colors=True)
    Stylizer(model, torch.device("cpu"), FrameLayout(66, 50), paint=paint)(frames, eager_out, 3)

    def broken(fall_back: bool) -> Stylizer:
        stylizer = Stylizer(model, torch.device("cpu"), FrameLayout(66, 50), "default", paint)

        def broken_compile(frames: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler")

        stylizer._convert = broken_compile  # type: ignore[method-assign]
        return stylizer

    stylizer, seconds, error = warm_up_or_fall_back(broken(True), 3, fall_back=True)
    assert (stylizer.compile_mode, seconds, stylizer.paint) == ("none", 0.0, paint)
    assert error is not None and "torch.compile(mode='default') failed" in error
    out = torch.empty_like(eager_out)
    stylizer(frames, out, 3)
    assert torch.equal(out, eager_out)
    with pytest.raises(CompileError):
        warm_up_or_fall_back(broken(False), 3, fall_back=False)
    working = Stylizer(model, torch.device("cpu"), FrameLayout(66, 50))
    assert warm_up_or_fall_back(working, 3, fall_back=True) == (working, 0.0, None)


@pytest.mark.slow
def test_chunks_share_parameter_sets_and_carry_bt709_tags(
    runs_by_ranks: dict[int, Path], even_job: tuple[Path, JobManifest]
) -> None:
    _, manifest = even_job
    output_dir = runs_by_ranks[3]
    first = parameter_sets(jobdir.output_chunk_path(output_dir, manifest.chunks[0]))
    assert {u[0] & 0x1F for u in first} == {7, 8}
    for chunk in manifest.chunks[1:]:
        assert parameter_sets(jobdir.output_chunk_path(output_dir, chunk)) == first, chunk
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i",
                            str(jobdir.output_chunk_path(output_dir, manifest.chunks[0]))],
                           capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p(tv, bt709" in probe and "66x50" in probe, probe


@pytest.mark.slow
@pytest.mark.parametrize("encoders", [1, 3])
def test_dead_rank_fails_the_job_and_the_rerun_does_only_the_rest(
    tmp_path: Path, model_file: Path, encoders: int
) -> None:
    """Odd frame size too: 65x49 is coded as 66x50 and crops back to the same frames.

    With three chunks in flight the dying rank leaves two of them half done.
    """
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    manifest = make_job(input_dir, 65, 49, [2] * 20, model_file)

    crashed = launch(input_dir, output_dir, 2, "--fault-rank", "1", "--fault-after-chunks", "1",
                     "--encoders", str(encoders))
    assert crashed.returncode != 0, crashed.stdout
    assert "fault injection" in crashed.stdout
    first_reports = {p.name: p.read_bytes() for p in (output_dir / jobdir.DONE_DIR).glob("*.json")}
    first_chunks = {p.name: p.stat().st_mtime_ns
                    for p in (output_dir / jobdir.CHUNKS_DIR).glob("[0-9]*.mkv")}
    assert 1 <= len(first_reports) < len(manifest.chunks), sorted(first_reports)
    assert any(json.loads(r)["rank"] == 1 for r in first_reports.values())
    assert not (output_dir / jobdir.SUMMARY_NAME).exists()

    rerun = ok(launch(input_dir, output_dir, 2, "--encoders", str(encoders)))
    summary = jobdir.read_summary(output_dir)
    assert summary.chunks_skipped == len(first_reports)
    assert summary.frames_processed == 2 * (len(manifest.chunks) - len(first_reports))
    assert summary.total_frames == manifest.total_frames
    for name, data in first_reports.items():  # finished chunks were left alone
        assert (output_dir / jobdir.DONE_DIR / name).read_bytes() == data
        mkv = (output_dir / jobdir.CHUNKS_DIR / name).with_suffix(".mkv")
        assert mkv.stat().st_mtime_ns == first_chunks[mkv.name]
    redone = {line.split("chunk ")[1][:5] for line in rerun.stdout.splitlines()
              if "] chunk " in line}
    assert redone == {c.stem for c in manifest.chunks} - {n[:5] for n in first_reports}
    # Ranks killed mid-chunk left partial files; redoing those chunks removed them.
    assert not list((output_dir / jobdir.CHUNKS_DIR).glob(".*"))
    for chunk in manifest.chunks:
        frames = decode_output(output_dir, manifest, chunk)
        assert frames.shape == (chunk.frames, 49, 65, 3)
        # The padded column and row repeat the last real ones, so edge colours stay intact.
        coded = decode(jobdir.output_chunk_path(output_dir, chunk), 66, 50).astype(int)
        assert np.abs(coded[:, :, 65] - coded[:, :, 64]).mean() < 6


@pytest.mark.slow
def test_frame_count_mismatch_fails_every_rank_with_a_clear_error(
    tmp_path: Path, model_file: Path
) -> None:
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    manifest = make_job(input_dir, 66, 50, [3, 3], model_file)
    lying = replace(manifest, total_frames=7,
                    chunks=[manifest.chunks[0], replace(manifest.chunks[1], frames=4)])
    jobdir.write_manifest(input_dir, lying)
    proc = launch(input_dir, output_dir, 2)
    assert proc.returncode != 0
    assert "decoded 3 frames and encoded 3, but the manifest says 4" in proc.stderr, proc.stderr
    bad = jobdir.output_chunk_path(output_dir, lying.chunks[1])
    assert not bad.exists() and not jobdir.is_chunk_done(output_dir, lying.chunks[1])
    # The failing rank removes its partial file. (The abort may kill the other rank mid-chunk
    # and leave its partial file: a rerun removes that before it redoes the chunk.)
    assert not list(bad.parent.glob(f".{bad.name}.*")), "partial chunk left behind"


@pytest.mark.parametrize("codec", ["utvideo", "rawvideo"])
def test_undecodable_chunk_fails_the_job_with_ffmpegs_error(tmp_path: Path, model_file: Path,
                                                           codec: str) -> None:
    """A chunk FFmpeg cannot decode, or a raw chunk cut inside a frame, fails the job alike."""
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    manifest = make_job(input_dir, 66, 50, [3, 3, 3], model_file)
    if codec == "rawvideo":
        manifest = raw_twin(input_dir, tmp_path / "raw", manifest)
        input_dir = tmp_path / "raw"
    broken = input_dir / manifest.chunks[1].file
    if codec == "rawvideo":
        broken.write_bytes(broken.read_bytes()[:-100])
    else:
        broken.write_bytes(b"not a video " * 1000)
    proc = launch(input_dir, output_dir, None, "--encoders", "2")
    assert proc.returncode == 1
    assert "FFmpegError" in proc.stderr and str(broken) in proc.stderr, proc.stderr
    if codec == "rawvideo":
        assert "ends inside a frame" in proc.stderr, proc.stderr
    assert not jobdir.is_chunk_done(output_dir, manifest.chunks[1])
    assert not (output_dir / jobdir.SUMMARY_NAME).exists()
    assert not list((output_dir / jobdir.CHUNKS_DIR).glob(".*")), "partial chunk left behind"


def test_missing_model_is_a_clear_error(even_job: tuple[Path, JobManifest],
                                        tmp_path: Path) -> None:
    input_dir, _ = even_job
    proc = launch(input_dir, tmp_path / "out", None, model=tmp_path / "nope.safetensors")
    assert proc.returncode == 2
    assert f"model file not found: {tmp_path / 'nope.safetensors'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_rejects_bad_folders_and_manifests(even_job: tuple[Path, JobManifest],
                                                tmp_path: Path) -> None:
    input_dir, manifest = even_job
    model = input_dir / jobdir.MODEL_NAME
    assert "input folder not found" in plan_job(tmp_path / "nope", tmp_path, model).error
    (tmp_path / "empty").mkdir()
    assert "no job.json in" in plan_job(tmp_path / "empty", tmp_path, model).error

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / jobdir.MANIFEST_NAME).write_text(json.dumps({**manifest.to_json(),
                                                           "total_frames": 99}))
    with pytest.raises(JobInputError, match="bad job manifest .*do not add up to total_frames"):
        read_valid_manifest(broken)
    (broken / jobdir.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(JobInputError, match="bad job manifest"):
        read_valid_manifest(broken)
    jobdir.write_manifest(broken, replace(manifest, width=0))
    with pytest.raises(JobInputError, match="frame size 0x50 is not positive"):
        read_valid_manifest(broken)
    jobdir.write_manifest(broken, replace(manifest, width=65,
                                          input_format=InputFormat("yuv420p", "bt601")))
    with pytest.raises(JobInputError, match="yuv420p chunks need an even frame size, not 65x50"):
        read_valid_manifest(broken)
    wrong_format = {**manifest.to_json(), "input_format": {"pix_fmt": "rgb24", "matrix": None}}
    (broken / jobdir.MANIFEST_NAME).write_text(json.dumps(wrong_format))
    with pytest.raises(JobInputError, match="input_format.pix_fmt 'rgb24' is not one of "
                                            "yuv420p, gbrp"):
        read_valid_manifest(broken)

    plan = plan_job(input_dir, tmp_path / "fresh_out", model)
    assert plan.error is None and plan.pending == [c.index for c in manifest.chunks]
    missing_chunk = tmp_path / "missing_chunk"
    jobdir.write_manifest(missing_chunk, manifest)
    assert "input chunk 0 not found" in plan_job(missing_chunk, tmp_path, model).error


def test_manifest_records_the_input_format_strictly() -> None:
    chunks = [ChunkSpec(0, "chunks/00000.mkv", 5, 0)]
    for input_format in (InputFormat("yuv420p", "bt709"), InputFormat("yuv420p", "bt601"),
                         InputFormat("yuv420p", "bt2020nc"), InputFormat("gbrp")):
        manifest = JobManifest(64, 48, 5, chunks, input_format=input_format)
        data = json.loads(json.dumps(manifest.to_json()))
        assert data["version"] == 3
        assert data["input_format"] == {"pix_fmt": input_format.pix_fmt,
                                        "matrix": input_format.matrix, "codec": "utvideo"}
        assert JobManifest.from_json(data) == manifest
        without_codec = {**data, "input_format": {
            k: v for k, v in data["input_format"].items() if k != "codec"}}
        with pytest.raises(ValueError, match="version 3 needs input_format.codec"):
            JobManifest.from_json(without_codec)
        # Version 2, written before the codec was recorded: Ut Video, which was all there was.
        assert JobManifest.from_json({**without_codec, "version": 2}) == manifest
    raw = JobManifest(64, 48, 5, chunks, input_format=InputFormat("gbrp", codec="rawvideo"))
    assert JobManifest.from_json(json.loads(json.dumps(raw.to_json()))) == raw
    # Version 2 manifests written after the codec field came, without a version bump.
    assert JobManifest.from_json({**raw.to_json(), "version": 2}) == raw
    good = JobManifest(64, 48, 5, chunks, input_format=InputFormat("yuv420p", "bt709")).to_json()
    bad = {
        "'rgb24' is not one of yuv420p, gbrp": {"pix_fmt": "rgb24", "matrix": None},
        "matrix 'bt2020c' is not one of bt709, bt601, bt2020nc, fcc, smpte240m":
            {"pix_fmt": "yuv420p", "matrix": "bt2020c"},
        "matrix None is not one of": {"pix_fmt": "yuv420p", "matrix": None},
        "matrix must be null for gbrp chunks, got 'bt709'": {"pix_fmt": "gbrp", "matrix": "bt709"},
        "input_format must be an object": "yuv420p",
        "input_format.codec 'ffv1' is not one of utvideo, rawvideo":
            {"pix_fmt": "gbrp", "matrix": None, "codec": "ffv1"},
    }
    for message, value in bad.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            JobManifest.from_json({**good, "input_format": value})
    with pytest.raises(TypeError, match="range"):
        JobManifest.from_json({**good, "input_format": {**good["input_format"], "range": "pc"}})
    with pytest.raises(KeyError, match="input_format"):
        JobManifest.from_json({k: v for k, v in good.items() if k != "input_format"})
    with pytest.raises(ValueError, match="unsupported job manifest version 1 "
                                         r"\(this job reads versions 2 and 3\)"):
        JobManifest.from_json({**good, "version": 1})  # RGB-only manifests are refused
    with pytest.raises(ValueError, match="unsupported job manifest version 4"):
        JobManifest.from_json({**good, "version": 4})  # from a newer CPU side
    with pytest.raises(ValueError, match="unsupported job manifest version None"):
        JobManifest.from_json({k: v for k, v in good.items() if k != "version"})


def test_ffmpeg_command_lines() -> None:
    argv = encode_argv("ff", Path("out.tmp"), 66, 50, crf=20, preset="fast", threads=2)
    assert argv[0] == "ff" and argv[-3:] == ["-f", "matroska", "out.tmp"]
    pairs = dict(zip(argv[1:-1], argv[2:], strict=True))
    assert pairs["-video_size"] == "66x50" and pairs["-pix_fmt"] == "yuv420p"
    assert pairs["-c:v"] == "libx264" and pairs["-bf"] == "0"
    assert (pairs["-crf"], pairs["-preset"], pairs["-threads"]) == ("20", "fast", "2")
    assert "-vf" not in argv, "frames arrive converted; FFmpeg must not convert them again"
    assert pairs["-colorspace"] == pairs["-color_primaries"] == pairs["-color_trc"] == "bt709"
    assert pairs["-color_range"] == "tv"
    assert yuv420_frame_bytes(66, 50) == 66 * 50 * 3 // 2
    with pytest.raises(ValueError, match="even dimensions"):
        encode_argv("ff", Path("x"), 65, 50, crf=20, preset="fast")

    # Chunks decode to their own planar format: FFmpeg neither converts nor packs.
    for pix_fmt in ("yuv420p", "gbrp"):
        argv = decode_argv("ff", Path("in.mkv"), pix_fmt, threads=2)
        assert argv[-5:] == ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
        assert argv[argv.index("-threads") + 1] == "2" and argv.index("-threads") < argv.index("-i")
        assert "passthrough" in argv and "-nostdin" in argv and "-vf" not in argv
    with pytest.raises(ValueError, match="unknown raw pixel format 'nv12'"):
        decode_argv("ff", Path("in.mkv"), "nv12")
    assert even_size(65, 49) == (66, 50) and even_size(66, 50) == (66, 50)


def test_rgb_to_yuv420_is_bt709_limited_range() -> None:
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    assert rgb_to_yuv420(red).tolist() == [[63, 63, 63, 63, 102, 240]]  # BT.709 textbook red
    assert rgb_to_yuv420(torch.ones(1, 3, 2, 2)).tolist() == [[235] * 4 + [128, 128]]
    assert rgb_to_yuv420(torch.zeros(1, 3, 2, 2)).tolist() == [[16] * 4 + [128, 128]]
    # A vertical edge: chroma on even columns weighs the column to its right 1/4 (left siting).
    edge = torch.zeros(1, 3, 2, 4)
    edge[:, 2, :, 1:] = 1  # blue from column 1 on
    u_plane = rgb_to_yuv420(edge)[0, 8:10].tolist()
    blue_u = 128 + 224 * (1 - 0.0722) / (2 * (1 - 0.0722))
    assert u_plane == [round(128 + (blue_u - 128) / 4), round(blue_u)]


def test_encoded_colours_decode_back_through_the_tagged_matrix(tmp_path: Path) -> None:
    """FFmpeg, reading the BT.709 tags, decodes what went in (a BT.601 mix-up is ~14 off)."""
    colours = torch.tensor([[200, 30, 60], [20, 180, 90], [90, 60, 220], [128, 128, 128]]) / 255
    rgb = colours[:, :, None, None].expand(4, 3, 16, 32).contiguous()
    with FrameWriter(FFMPEG, tmp_path / "flat.mkv", 32, 16, crf=10, preset="medium") as writer:
        writer.write(rgb_to_yuv420(rgb).numpy())
        writer.close()
    decoded = decode(tmp_path / "flat.mkv", 32, 16)
    assert decoded.shape == (4, 16, 32, 3)
    assert np.abs(decoded[:, 8, 16].astype(int) - (colours * 255).round().numpy()).max() <= 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_cpu(even_job: tuple[Path, JobManifest], tmp_path: Path) -> None:
    input_dir, manifest = even_job
    cpu_out, cuda_out = tmp_path / "cpu", tmp_path / "cuda"
    ok(launch(input_dir, cpu_out, None))
    proc = ok(subprocess.run(
        [sys.executable, "-m", "gpu.stylize", "--input", str(input_dir), "--output",
         str(cuda_out), "--device", "cuda"], cwd=REPO, capture_output=True, text=True,
        timeout=LAUNCH_TIMEOUT))
    assert "cuda" in proc.stdout
    assert jobdir.read_summary(cuda_out).device != "cpu"
    for chunk in manifest.chunks:
        on_cpu = decode_output(cpu_out, manifest, chunk).astype(int)
        on_cuda = decode_output(cuda_out, manifest, chunk).astype(int)
        assert len(on_cuda) == chunk.frames
        assert np.abs(on_cpu - on_cuda).mean() < 4, "bf16 drifted too far from fp32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_matches_eager(even_job: tuple[Path, JobManifest], tmp_path: Path) -> None:
    input_dir, manifest = even_job
    runs = {}
    for mode in ("none", "default"):
        runs[mode] = tmp_path / mode
        ok(subprocess.run(
            [sys.executable, "-m", "gpu.stylize", "--input", str(input_dir), "--output",
             str(runs[mode]), "--device", "cuda", "--compile", mode, "--encoders", "2"],
            cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT))
    compiled = jobdir.read_summary(runs["default"])
    assert compiled.compile == "default" and compiled.warmup_seconds > 0
    assert 0 < compiled.device_busy_fraction <= 1
    for chunk in manifest.chunks:
        eager = decode_output(runs["none"], manifest, chunk).astype(int)
        assert np.abs(decode_output(runs["default"], manifest, chunk) - eager).mean() < 1.0
