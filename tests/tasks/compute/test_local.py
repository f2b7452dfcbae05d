"""The local backend: its mpiexec line, what an exit status means, retries after a rank death
(reusing finished chunks), and ranks that die with their parent."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest

from gpu import jobdir
from gpu.jobdir import ChunkSpec, EncodeSettings, JobManifest
from tasks.compute.base import GpuJob, GpuJobError
from tasks.compute.local import LocalMpiBackend, build_mpiexec_argv, classify_exit, code_root
from tasks.settings import ComputeSettings

GUARD = ["-m", "tasks.compute.orphan_guard"]


def test_mpiexec_and_every_rank_start_through_the_orphan_guard(tmp_path: Path) -> None:
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out", ("--device", "cpu"), ranks=3)

    argv = build_mpiexec_argv(job, python="/venv/bin/python", parent_pid=4242)

    assert argv[:5] == ["/venv/bin/python", *GUARD, "--exec", "4242"]
    assert argv[5].endswith("mpiexec")
    assert argv[6:11] == ["-n", "3", "--oversubscribe", "--bind-to", "none"]
    assert ("--allow-run-as-root" in argv) == (os.geteuid() == 0)
    rank = ["/venv/bin/python", *GUARD, "gpu.stylize", "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert argv[-len(rank):] == rank


@pytest.mark.parametrize(
    ("status", "retryable", "words"),
    [
        (137, True, "a rank was killed by SIGKILL"),
        (143, True, "a rank was killed by SIGTERM"),
        (-9, True, "mpiexec was killed by SIGKILL"),
        (17, True, "a rank stopped abruptly"),  # gpu.stylize's fault injection: a crash
        (2, False, "the job refused its input"),
        (1, False, "the job failed"),
    ],
)
def test_exit_status_meaning(status: int, retryable: bool, words: str) -> None:
    verdict = classify_exit(status)
    assert verdict.retryable is retryable and verdict.reason == words


class ScriptedBackend(LocalMpiBackend):
    """The real retry loop over scripted run outcomes instead of mpiexec runs."""

    def __init__(self, statuses: list[int], **settings: object) -> None:
        self.waits: list[float] = []
        super().__init__(ComputeSettings(**settings), wait_before_retry=self.waits.append)
        self.statuses = statuses

    def _run_once(self, job: GpuJob, on_progress: object) -> tuple[int, str]:
        return self.statuses.pop(0), "last lines of the job\n"


def test_rank_deaths_are_retried_with_backoff(tmp_path: Path) -> None:
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out")
    backend = ScriptedBackend([137, 17, 0], gpu_attempts=3, retry_backoff_seconds=5)

    result = backend.run(job)

    assert result.attempts == 3 and backend.waits == [5, 10]
    assert result.retry_reasons == ["attempt 1: status 137, a rank was killed by SIGKILL",
                                    "attempt 2: status 17, a rank stopped abruptly"]


def test_bad_input_and_job_errors_fail_at_once(tmp_path: Path) -> None:
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out")
    for status in (2, 1):
        backend = ScriptedBackend([status, 0], gpu_attempts=3)
        with pytest.raises(GpuJobError, match=f"exited with status {status}") as caught:
            backend.run(job)
        assert caught.value.retryable is False and backend.waits == []
        assert caught.value.log_tail == "last lines of the job\n"


def test_rank_deaths_past_the_limit_fail_as_retryable(tmp_path: Path) -> None:
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out")
    backend = ScriptedBackend([137, 137], gpu_attempts=2, retry_backoff_seconds=0)

    with pytest.raises(GpuJobError, match="killed by SIGKILL after 2 attempts") as caught:
        backend.run(job)

    assert caught.value.retryable is True


def test_the_guard_refuses_to_run_when_its_parent_is_already_gone() -> None:
    """Started after its parent died, a process could never be killed with it."""
    not_my_parent = subprocess.run(
        [sys.executable, *GUARD, "--exec", "1", "/bin/echo", "ran"], cwd=code_root(),
        capture_output=True, text=True, timeout=60,
    )
    assert not_my_parent.returncode == 137 and "ran" not in not_my_parent.stdout
    no_launcher = subprocess.run(
        [sys.executable, *GUARD, "json.tool", "--help"], cwd=code_root(),
        capture_output=True, text=True, timeout=60,
    )
    assert no_launcher.returncode == 137 and not no_launcher.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has died
    except OSError:
        return False


@pytest.mark.slow
def test_ranks_die_with_the_flow_process(tmp_path: Path) -> None:
    """SIGKILL the process running the backend: mpiexec and every rank go with it."""
    out = tmp_path / "out"
    runner = (
        "import sys; from pathlib import Path; from tasks.compute.base import GpuJob; "
        "from tasks.compute.local import LocalMpiBackend; from tasks.settings import "
        "ComputeSettings; LocalMpiBackend(ComputeSettings()).run(GpuJob("
        "'tests.fakes.stalled_job', Path(sys.argv[1]), Path(sys.argv[2]), ranks=2))"
    )
    parent = subprocess.Popen([sys.executable, "-c", runner, str(tmp_path), str(out)],
                              cwd=code_root(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "pids").glob("[0-9]"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "ranks never started"
            time.sleep(0.1)
        ranks = [int(p.read_text()) for p in (out / "pids").glob("[0-9]")]
        assert all(_alive(pid) for pid in ranks)

        parent.send_signal(signal.SIGKILL)
        parent.wait()

        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in ranks):
            assert time.monotonic() < deadline, "ranks outlived the flow's process"
            time.sleep(0.1)
    finally:
        parent.kill()
        for pid_file in (out / "pids").glob("[0-9]"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def make_job_folder(folder: Path, model: Path, chunks: int, frames: int) -> JobManifest:
    """A job folder like the CPU side writes, cut from a lavfi test pattern (lossless)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    specs = []
    for index in range(chunks):
        spec = ChunkSpec(index, f"chunks/{index:05d}.mkv", frames, index * frames)
        (folder / "chunks").mkdir(parents=True, exist_ok=True)
        source = (f"testsrc=size=64x48:rate=25,trim=start_frame={spec.first_frame}:"
                  f"end_frame={spec.first_frame + frames},setpts=PTS-STARTPTS")
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-c:v", "ffv1",
                        "-pix_fmt", "gbrp", "-f", "matroska", str(folder / spec.file)],
                       check=True)
        specs.append(spec)
    manifest = JobManifest(64, 48, chunks * frames, specs,
                           encode=EncodeSettings(crf=18, preset="ultrafast"))
    jobdir.write_manifest(folder, manifest)
    (folder / jobdir.MODEL_NAME).write_bytes(model.read_bytes())
    return manifest


def _rank_pids(output_dir: Path) -> list[int]:
    """Pids of the job's ranks (not mpiexec's, whose command line holds the same words)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:4] == [b"-m", b"tasks.compute.orphan_guard", b"gpu.stylize"] and (
                str(output_dir).encode() in args):
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.slow
def test_a_killed_rank_is_retried_and_only_unfinished_chunks_are_redone(
    tmp_path: Path, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    manifest = make_job_folder(input_dir, tiny_model_path, chunks=12, frames=2)
    job = GpuJob("gpu.stylize", input_dir, output_dir, ranks=2,
                 args=("--device", "cpu", "--threads", "1", "--batch-size", "2",
                       "--encoders", "1"))
    killed: list[int] = []
    kept: dict[str, tuple[bytes, int]] = {}

    def kill_a_rank_once_a_chunk_is_done() -> None:
        if not killed and jobdir.read_reports(output_dir):
            pids = _rank_pids(output_dir)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    def remember_finished_chunks(seconds: float) -> None:
        """Called between the runs: what the killed run finished must survive the retry."""
        for report in (output_dir / jobdir.DONE_DIR).glob("*.json"):
            chunk = output_dir / jobdir.CHUNKS_DIR / f"{report.stem}.mkv"
            kept[report.name] = (report.read_bytes(), chunk.stat().st_mtime_ns)

    caplog.set_level(logging.INFO, logger="test.local")
    backend = LocalMpiBackend(
        ComputeSettings(gpu_attempts=3, retry_backoff_seconds=0),
        logging.getLogger("test.local"), poll_seconds=0.1,
        wait_before_retry=remember_finished_chunks,
    )
    result = backend.run(job, kill_a_rank_once_a_chunk_is_done)

    assert killed and result.attempts == 2, caplog.text
    assert "killed by SIGKILL" in result.retry_reasons[0]
    assert 1 <= len(kept) < len(manifest.chunks)
    summary = jobdir.read_summary(output_dir)
    assert result.reused_chunks == summary.chunks_skipped == len(kept)
    assert summary.frames_processed == 2 * (len(manifest.chunks) - len(kept))
    assert summary.total_frames == manifest.total_frames
    for name, (report, mtime) in kept.items():  # finished chunks were left alone
        assert (output_dir / jobdir.DONE_DIR / name).read_bytes() == report
        chunk = output_dir / jobdir.CHUNKS_DIR / f"{Path(name).stem}.mkv"
        assert chunk.stat().st_mtime_ns == mtime
    assert all(jobdir.is_chunk_done(output_dir, c) for c in manifest.chunks)
    assert not _rank_pids(output_dir)
