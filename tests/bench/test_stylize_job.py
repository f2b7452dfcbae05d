"""The throughput benchmarks in their CPU smoke modes: their JSON, and that they measure the
real thing (chunks cut by the CPU side's own split, PSNR as FFmpeg computes it)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench import clips, codec_rates, model_fps
from gpu.ffmpeg import find_ffmpeg
from gpu.jobdir import EncodeSettings, InputFormat
from gpu.stylize import rgb_to_yuv420
from gpu.video_io import COLOUR_TAGS, FrameReader, frame_bytes
from tasks import media
from tasks.media.chunking import DEFAULT_CHUNK_SECONDS
from tasks.repo import REPO_ROOT
from tasks.settings import LimitSettings
from tests.clips import make_clip

FFMPEG = find_ffmpeg()


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_model_fps_smoke_measures_every_variant(tiny_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "model_fps.json"
    args = model_fps.get_args_parser().parse_args(
        ["--device", "cpu", "--smoke", "--model", str(tiny_model_path), "--out", str(out)])
    report = model_fps.main(args)
    assert json.loads(out.read_text()) == report
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    results = report["results"]
    assert [r["variant"] for r in results] == ["fp32-eager", "bf16-eager"]
    for r in results:
        assert (r["model"], r["arch"], r["size"], r["batch"]) == ("tiny", "stylenet", "96x54", 2)
        assert all(positive(r[k]) for k in ("fps", "ms_per_batch", "first_call_seconds")), r
        assert r["fps"] == pytest.approx(2 / (r["ms_per_batch"] / 1000), rel=0.01)
    psnr = {r["variant"]: r["psnr_db"] for r in results}
    # The fp32 variant is a second, separate run of the reference computation: identical.
    assert psnr["fp32-eager"] == 100.0
    assert 20 < psnr["bf16-eager"] < 100
    assert [b["variant"] for b in report["best"]] in (["fp32-eager"], ["bf16-eager"])
    assert report["goal"]["size"] == "1920x1080" and report["goal"]["met_by"] == []


def test_model_specs_are_files_or_seeded_architectures(tiny_model_path: Path) -> None:
    (tiny_label, tiny), (johnson_label, johnson) = model_fps.load_models(
        [str(tiny_model_path), "johnson"], seed=0)
    assert (tiny_label, johnson_label) == ("tiny", "johnson (seeded)")
    assert not tiny.training and not johnson.training
    again = model_fps.load_models(["johnson"], seed=0)[0][1]
    assert all(torch.equal(a, b) for a, b in zip(johnson.state_dict().values(),
                                                 again.state_dict().values(), strict=True))


def test_synthetic_frames_look_like_video() -> None:
    frames = model_fps.natural_frames(3, 64, 36, seed=0)
    assert frames.shape == (3, 3, 36, 64) and frames.min() >= 0 and frames.max() <= 1
    assert torch.equal(frames, (frames * 255).round() / 255), "not 8-bit values"
    assert frames.std() > 0.1, "too flat"
    assert (frames[1] - frames[0]).abs().mean() > 0.005, "does not move"
    assert torch.equal(frames, model_fps.natural_frames(3, 64, 36, seed=0))
    same = torch.zeros(4, 4, dtype=torch.uint8)
    assert model_fps.psnr_db(same, same) == model_fps.MAX_PSNR_DB
    assert model_fps.psnr_db(same, same + 1) == pytest.approx(20 * math.log10(255))


@pytest.mark.slow
def test_stylize_job_smoke_reports_rates_and_the_target(tiny_model_path: Path,
                                                        tmp_path: Path) -> None:
    fps_json = tmp_path / "model_fps.json"
    fps_json.write_text(json.dumps({"results": [
        {"model": "tiny", "arch": "stylenet", "size": "96x54", "batch": 4,
         "variant": "fp32-eager", "fps": 5.0}]}))
    out = tmp_path / "stylize_job.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stylize_job", "--device", "cpu", "--smoke",
         "--model", str(tiny_model_path), "--batch-size", "4", "--encoders", "2",
         "--chunk-codec", "utvideo",
         "--compare-presets", "ultrafast", "--rate-frames", "30",
         "--model-fps-json", str(fps_json), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert report["device"] == "cpu" and positive(report["host_cores"])
    assert report["settings"]["chunk_codec"] == "utvideo"
    assert [c["clip"] for c in report["clips"]] == ["1080p", "square720"]
    for clip in report["clips"]:
        assert "error" not in clip, clip["error"]
        assert clip["frames"] == clip["source"]["frames"] and clip["chunks"] >= 3
        assert clip["source"]["audio"] == (clip["clip"] == "square720")
        # The built clips are even-sized, untagged SD H.264: cut as BT.601 4:2:0 chunks, which
        # the host decodes as the job does, to their own planar format.
        assert clip["input_format"] == {"pix_fmt": "yuv420p", "matrix": "bt601",
                                        "codec": "utvideo"}
        assert positive(clip["input_bytes"])
        host = clip["host"]
        assert positive(host["decode_fps"]) and host["decode_processes"] == 2
        assert (host["decode_pix_fmt"], host["decode_codec"]) == ("yuv420p", "utvideo")
        assert host["decode_method"] == codec_rates.DECODE_METHODS["utvideo"]
        assert host["decoder_threads_each"] == min(2, report["host_cores"])
        # The job's own preset, and ultrafast for comparison.
        assert set(host["encode"]) == {EncodeSettings().preset, "ultrafast"}
        for rates in host["encode"].values():
            assert all(positive(rates[k]) for k in ("all_cores_fps", "shared_fps", "fps",
                                                    "psnr_db", "kbit_per_frame")), rates
            assert rates["parallel_processes"] == 2
            assert rates["all_cores_threads_each"] == report["host_cores"]
            assert rates["shared_threads_each"] == max(1, report["host_cores"] // 2)
            assert rates["fps"] == max(rates["all_cores_fps"], rates["shared_fps"])
            assert rates["fps"] == rates[f"{rates['fps_from']}_fps"]
        job = clip["job"]
        assert job["encoders_per_rank"] == [2] and job["compile"] == "none"
        threads = job["threads_per_rank"][0]
        assert job["encoder_threads_per_rank"] == [threads]
        assert job["decoder_threads_per_rank"] == [min(2, threads)]
        assert all(positive(job[k]) for k in ("fps", "wall_fps", "run_seconds")), job
        assert 0 < job["device_busy_fraction"] <= 1
        assert 0 <= job["host_cpu_busy_fraction"] <= 1
        for stage in job["stages"].values():
            assert positive(stage["seconds"]) and positive(stage["fps_per_worker"])
        assert clip["gpu_busy_fraction"] is None  # no GPU here
        assert clip["encode_fps"] == host["encode"][EncodeSettings().preset]["fps"]
        if clip["size"] == "96x54":
            assert clip["model_fps"] == 5.0
            assert clip["target_fps"] == pytest.approx(0.9 * 5.0, abs=0.01)
            assert clip["met"] == (job["fps"] >= clip["target_fps"])
        else:
            assert clip["model_fps"] is None and "no stylenet" in clip["model_fps_source"]
            assert clip["target_fps"] == pytest.approx(0.9 * clip["encode_fps"], abs=0.01)


@pytest.mark.parametrize("rotate", [0, 90])
def test_a_given_clip_is_probed_and_cut_by_the_product_and_read_as_the_job_does(
        tmp_path: Path, rotate: int) -> None:
    """``--clip FILE``: the product's probe and split, raw chunks holding the Ut Video chunks'
    frames in display orientation, and decode rates that read both."""
    source = clips.probed_source(make_clip(tmp_path / "clip.mp4", width=64, height=48,
                                           seconds=1.0, rotate=rotate))
    assert (source.video.display_width, source.video.display_height) == \
        ((48, 64) if rotate else (64, 48))
    encode = EncodeSettings()
    utvideo = clips.split_clip(source, tmp_path / "utvideo", 0.3, "utvideo", encode, FFMPEG)
    raw = clips.split_clip(source, tmp_path / "raw", 0.3, "rawvideo", encode, FFMPEG)
    assert utvideo.plan.chunk_frames == raw.plan.chunk_frames == 8  # 0.3 s at 25 frames/s
    product = media.split_video(source.path, media.probe(source.path, LimitSettings()),
                                tmp_path / "product", 8, encode, "rawvideo")
    assert raw.manifest == product
    raw, utvideo = raw.manifest, utvideo.manifest
    assert raw.input_format == InputFormat("yuv420p", "bt601", codec="rawvideo")
    assert (raw.width, raw.height) == (utvideo.width, utvideo.height)
    assert [(c.frames, c.first_frame) for c in raw.chunks] == \
        [(c.frames, c.first_frame) for c in utvideo.chunks]
    per_frame = frame_bytes("yuv420p", raw.width, raw.height)
    frames = next(c.frames for c in raw.chunks)
    buffer = np.empty((frames, per_frame), np.uint8)
    with FrameReader(FFMPEG, tmp_path / "utvideo" / utvideo.chunks[0].file, raw.width,
                     raw.height, "yuv420p") as reader:
        assert reader.read_into(buffer) == frames
    assert (tmp_path / "raw" / raw.chunks[0].file).read_bytes() == buffer.tobytes()
    for manifest, folder in ((utvideo, "utvideo"), (raw, "raw")):
        assert positive(codec_rates.decode_rate(FFMPEG, tmp_path / folder, manifest,
                                                processes=2, threads=1))
    assert set(codec_rates.DECODE_METHODS) == {"utvideo", "rawvideo"}


@pytest.mark.parametrize("name", sorted(clips.SMOKE_CLIPS))
def test_a_built_clip_is_what_its_spec_says_by_the_products_probe(tmp_path: Path,
                                                                  name: str) -> None:
    """Built clips are cut without a probe (the GPU host has no PyAV): the product's probe
    must find exactly the stream their spec states."""
    spec = clips.SMOKE_CLIPS[name]
    built = clips.build_clip(name, spec, tmp_path, FFMPEG)
    probe = media.probe(built.path, LimitSettings())
    assert probe.source_video == dataclasses.replace(spec.source_video(),
                                                     fps=pytest.approx(spec.fps))
    assert bool(probe.audio) == spec.audio == built.audio
    assert probe.video.pixel_format == built.pix_fmt


def test_encode_quality_is_ffmpegs_psnr(tmp_path: Path) -> None:
    width, height = 64, 48
    rgb = model_fps.natural_frames(6, width, height, seed=1)
    sample = rgb_to_yuv420(rgb).numpy()
    psnr, bytes_per_frame = codec_rates.encode_quality(FFMPEG, sample, width, height, 30,
                                                       "ultrafast", tmp_path)
    assert bytes_per_frame > 0 and list(tmp_path.iterdir()) == []
    raw, encoded = tmp_path / "sample.yuv", tmp_path / "sample.mkv"
    raw.write_bytes(sample.tobytes())
    with codec_rates.FrameWriter(FFMPEG, encoded, width, height, 30, "ultrafast") as writer:
        writer.write(sample)
        writer.close()
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-f", "rawvideo", "-pix_fmt", "yuv420p",
         "-video_size", f"{width}x{height}", *COLOUR_TAGS, "-i", str(raw), "-i", str(encoded),
         "-lavfi", "[1:v][0:v]psnr", "-f", "null", "-"], capture_output=True, text=True)
    ffmpegs = float(re.search(r"PSNR .*average:(\S+)", proc.stderr).group(1))
    assert 20 < psnr < 60
    assert psnr == pytest.approx(ffmpegs, abs=0.01)
    assert codec_rates.psnr_db(sample, sample) == math.inf


def test_stylize_job_records_the_chunk_codec_in_its_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench import stylize_job

    monkeypatch.setattr(stylize_job, "run_clips", lambda args, report, workdir, bench: report)
    parser = stylize_job.get_args_parser()
    assert parser.parse_args([]).chunk_codec == "rawvideo"
    with pytest.raises(SystemExit):
        parser.parse_args(["--chunk-codec", "ffv1"])
    args = parser.parse_args(["--device", "cpu", "--chunk-codec", "utvideo",
                              "--workdir", str(tmp_path)])
    assert stylize_job.main(args)["settings"]["chunk_codec"] == "utvideo"


def test_stylize_job_cuts_chunks_as_long_as_the_flows_default() -> None:
    """The benchmark runs where the settings' packages are missing (the GPU host has no
    pydantic), so both take the default from the stdlib chunk policy; this keeps them one."""
    from tasks.settings import ComputeSettings

    assert ComputeSettings().chunk_seconds == DEFAULT_CHUNK_SECONDS


@pytest.mark.parametrize("content", ["", "[]", '{"results": 3}'])
def test_stylize_job_refuses_a_bad_model_fps_report_before_building_clips(
        content: str, tmp_path: Path) -> None:
    from bench import stylize_job

    report = tmp_path / "model_fps.json"
    report.write_text(content)
    with pytest.raises(SystemExit, match="--model-fps-json .*model_fps.json"):
        stylize_job.check_model_fps_json(report)
    with pytest.raises(SystemExit, match="not a bench.model_fps report"):
        stylize_job.check_model_fps_json(tmp_path / "missing.json")
    report.write_text('{"results": []}')
    stylize_job.check_model_fps_json(report)  # a report with no matching entry is fine


def test_model_specs_may_carry_hyper_parameters() -> None:
    [(label, model)] = model_fps.load_models(['stylenet:{"head": "full_res", "blocks": 2}'], 0)
    assert label == 'stylenet:{"head": "full_res", "blocks": 2} (seeded)'
    assert model.hparams["head"] == "full_res" and model.hparams["blocks"] == 2


@pytest.mark.slow
def test_scaling_smoke_runs_every_rank_count_on_the_same_chunks(tiny_model_path: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--device", "cpu", "--smoke",
         "--model", str(tiny_model_path), "--rank-counts", "1,2", "--rate-frames", "20",
         "--clip", "1080p", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["rank_counts"] == [1, 2] and report["gpus"] == 0
    [clip] = report["clips"]
    one, two = clip["runs"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert one["frames"] == two["frames"] == clip["frames"] > 0
    assert len(two["threads_per_rank"]) == 2 and two["devices"] == ["cpu"]
    assert all(0 <= run["host_cpu_busy_fraction"] <= 1 for run in (one, two))
    assert one["efficiency"] == 1.0
    assert two["efficiency"] == pytest.approx(two["fps"] / (2 * one["fps"]), abs=1e-3)
    assert clip["met"] == (two["efficiency"] >= 0.9)
    assert clip["host"]["decode_processes"] == sum(two["encoders_per_rank"])


@pytest.mark.parametrize("text", ["2,1", "1,1", "", "1,0"])
def test_scaling_refuses_rank_counts_without_a_one_rank_reference(text: str) -> None:
    from bench import scaling

    with pytest.raises(SystemExit, match="--rank-counts must start with 1"):
        scaling.parse_rank_counts(text)
    assert scaling.parse_rank_counts("1,2,4") == [1, 2, 4]


def test_stylize_job_host_cpu_busy_is_the_mean_over_the_ranks_that_measured_it() -> None:
    from bench import stylize_job
    from gpu.jobdir import JobSummary, RankSummary

    def summary(*fractions: float | None) -> JobSummary:
        ranks = [RankSummary(rank=n, host="h", device="cpu", chunks=1, frames=1,
                             host_cpu_busy_fraction=f) for n, f in enumerate(fractions)]
        return JobSummary(total_frames=1, chunks=1, chunks_skipped=0, frames_processed=1,
                          wall_seconds=1.0, fps=1.0, device="cpu", ranks=ranks)

    assert stylize_job.host_cpu_busy_fraction(summary(0.5, 0.70001, None)) == 0.6
    assert stylize_job.host_cpu_busy_fraction(summary(None, None)) is None


def test_job_line_passes_the_jobs_options_only_when_set(tmp_path: Path) -> None:
    from bench import stylize_job

    parser = stylize_job.get_args_parser()
    plain = stylize_job.job_argv(parser.parse_args([]), tmp_path / "in", tmp_path / "out", "ff")
    assert "--max-waiting-batches" not in plain and "--encoder-threads" not in plain
    assert plain[:3] == [sys.executable, "-m", "gpu.stylize"]
    argv = stylize_job.job_argv(parser.parse_args(["--max-waiting-batches", "2", "--ranks", "2"]),
                                tmp_path / "in", tmp_path / "out", "ff")
    assert argv[argv.index("--max-waiting-batches") + 1] == "2"
    assert argv[argv.index("-n") + 1] == "2" and "--bind-to" in argv


def test_variant_summary_groups_runs_by_settings_and_clip() -> None:
    from bench import variant_summary

    def report(codec: str, shares: dict[str, float], chunk_frames: int = 60) -> dict:
        return {"settings": {"chunk_codec": codec, "batch_size": "default"},
                "clips": [{"clip": clip, "encode_fps": 200.0, "chunk_frames": chunk_frames,
                           "job": {"fps": 200.0 * share, "batch_size": 16}}
                          for clip, share in shares.items()] + [{"clip": "bad", "error": "x"}]}

    document = {"calls": [
        {"call": 1, "runs": {"raw": report("rawvideo", {"1080p": 0.95}),
                             "ut": report("utvideo", {"1080p": 0.80})}},
        {"call": 2, "runs": {"raw": report("rawvideo", {"1080p": 0.85, "square720": 0.91}),
                             "raw2": report("rawvideo", {"1080p": 0.91})}},
        # The same settings after the default chunk length changed: a group of its own.
        {"call": 3, "runs": {"raw": report("rawvideo", {"1080p": 0.97}, chunk_frames=120)}},
    ]}
    groups = {(g["settings"]["chunk_codec"], g["clip"], g["as_run"]["chunk_frames"]): g
              for g in variant_summary.summarize(document)}
    assert set(groups) == {("rawvideo", "1080p", 60), ("utvideo", "1080p", 60),
                           ("rawvideo", "square720", 60), ("rawvideo", "1080p", 120)}
    assert groups["rawvideo", "1080p", 120]["as_run"] == {"chunk_frames": 120, "batch_size": 16}
    assert [r["share"] for r in groups["rawvideo", "1080p", 120]["runs"]] == [0.97]
    groups = {key[:2]: group for key, group in groups.items() if key[2] == 60}
    raw = groups["rawvideo", "1080p"]
    assert [r["run"] for r in raw["runs"]] == ["call 1: raw", "call 2: raw", "call 2: raw2"]
    assert [r["share"] for r in raw["runs"]] == [0.95, 0.85, 0.91]
    assert (raw["median_share"], raw["met_runs"]) == (0.91, 2)
    assert (groups["utvideo", "1080p"]["median_share"], groups["utvideo", "1080p"]["met_runs"]) \
        == (0.8, 0)
    single = variant_summary.summarize(report("rawvideo", {"1080p": 0.9}))
    assert [(g["median_share"], g["met_runs"]) for g in single] == [(0.9, 1)]


@pytest.mark.slow
def test_stylize_job_runs_the_job_again_between_x264_measurements(
        tiny_model_path: Path, tmp_path: Path) -> None:
    from bench import variant_summary

    out = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stylize_job", "--device", "cpu", "--smoke",
         "--model", str(tiny_model_path), "--batch-size", "4", "--encoders", "2",
         "--rate-frames", "30", "--clip", "1080p_90s", "--job-runs", "3", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [clip] = json.loads(out.read_text())["clips"]
    # The long clip for 4-GPU scaling is built like the others (its tiny form here).
    assert clip["frames"] == clip["source"]["frames"] == clips.SMOKE_CLIPS["1080p_90s"].frames
    runs = clip["job_runs"]
    assert len(runs) == 3 and clip["job"]["fps"] == runs[0]["fps"]
    assert runs[0]["x264_fps_before"] == clip["encode_fps"]
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later["x264_fps_before"] == earlier["x264_fps_after"]
    for run in runs:
        x264 = (run["x264_fps_before"] + run["x264_fps_after"]) / 2
        assert run["share"] == pytest.approx(run["fps"] / x264, abs=1e-4)
    shares = sorted(run["share"] for run in runs)
    assert clip["median_share"] == shares[1]
    assert clip["met"] == (shares[1] >= 0.9)
    [group] = variant_summary.summarize(json.loads(out.read_text()))
    assert [run["share"] for run in group["runs"]] == [run["share"] for run in runs]
    assert (tmp_path / "work" / "1080p_90s" / "in").is_dir()  # --workdir is kept, and so checked
    assert not list((tmp_path / "work").glob("**/out-*")), "a run's output was left behind"
