"""Where a GPU job's time goes: each stage's CPU time, the core shares and encoder settings that
the job's summary records (issue 19), measured for real on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpu import jobdir
from gpu.jobdir import EncodeSettings, InputFormat, RankSummary
from gpu.stylize.metrics import ProcessCpu, StageCpu, find_child_process
from gpu.stylize.summary import core_share, host_cpu_busy_fraction
from tests.stylize_jobs import launch, make_job, ok, raw_twin

BURN = "import sys, time\nwhile time.process_time() < float(sys.argv[1]): pass\n"
"""A child that uses a given CPU time, whatever the machine's load."""


def test_a_childs_cpu_time_reads_until_it_is_reaped() -> None:
    marker = f"restyle-test-{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", BURN, "0.3", marker])
    try:
        found = find_child_process(marker)
        assert found is not None and found.pid == child.pid
        # Exited but not yet waited for: its times are final and still readable.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        cpu = found.cpu_seconds()
        assert cpu is not None and 0.25 <= cpu < 5
    finally:
        child.wait()
    assert found.cpu_seconds() is None  # reaped: gone, and its pid may belong to another
    assert find_child_process(marker) is None
    assert find_child_process(sys.executable) is None  # not a child of this process


def test_stage_cpu_splits_the_ranks_cpu_time() -> None:
    ledger = StageCpu()
    ledger.add_decode(0.5, 2.0)  # an FFmpeg-decoded chunk
    ledger.add_decode(0.25, 0.0)  # a raw chunk: no decoder process
    ledger.add_lane(1.0)
    start, end = ProcessCpu(own=10.0, children=3.0), ProcessCpu(own=14.0, children=13.0)
    split = ledger.split(start, end)
    assert split.decode == pytest.approx(0.75 + 2.0)
    assert split.infer == pytest.approx(4.0 - 0.75 - 1.0)  # the rest of the rank's own time
    assert split.encode == pytest.approx(1.0 + 10.0 - 2.0)  # children less the decoders
    ledger.add_decode(0.1, None)  # a decoder whose time could not be read
    split = ledger.split(start, end)
    assert (split.decode, split.encode) == (None, None)
    assert split.infer == pytest.approx(4.0 - 0.85 - 1.0)


def rank(number: int, host: str, cores: int, **cpu: float | None) -> RankSummary:
    return RankSummary(rank=number, host=host, device="cpu", chunks=1, frames=1,
                       host_cores=cores, **cpu)


def test_core_shares_divide_by_every_hosts_cores_once() -> None:
    ranks = [rank(0, "a", 8, encode_cpu_seconds=4.0, host_cpu_busy_fraction=0.5),
             rank(1, "a", 8, encode_cpu_seconds=6.0, host_cpu_busy_fraction=0.5),
             rank(2, "b", 4, encode_cpu_seconds=2.0, host_cpu_busy_fraction=0.8)]
    assert core_share(ranks, 2.0, "encode_cpu_seconds") == pytest.approx(12.0 / (12 * 2.0))
    assert host_cpu_busy_fraction(ranks) == pytest.approx((0.5 + 0.8) / 2)
    assert core_share(ranks, 2.0, "decode_cpu_seconds") is None  # not measured
    assert core_share(ranks, 0.0, "encode_cpu_seconds") is None
    assert host_cpu_busy_fraction([rank(0, "a", 8)]) is None


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> dict[str, Path]:
    """One job run twice, from Ut Video chunks (FFmpeg decodes) and from their raw planes."""
    root = tmp_path_factory.mktemp("metrics")
    manifest = make_job(root / "utvideo", 66, 50, [4, 5], tiny_model_path,
                        InputFormat("yuv420p", "bt709"))
    manifest = replace(manifest, encode=EncodeSettings(crf=23, preset="superfast"))
    jobdir.write_manifest(root / "utvideo", manifest)
    raw_twin(root / "utvideo", root / "rawvideo", manifest)
    outputs = {}
    for name in ("utvideo", "rawvideo"):
        outputs[name] = root / f"{name}_out"
        ok(launch(root / name, outputs[name], None, "--threads", "2", "--encoder-threads", "3"))
    return outputs


def test_summary_records_encoder_settings_and_each_stages_core_share(
    jobs: dict[str, Path]
) -> None:
    for name, output_dir in jobs.items():
        summary = jobdir.read_summary(output_dir)
        assert (summary.encoder, summary.encoder_preset, summary.encoder_crf,
                summary.encoder_threads) == ("libx264", "superfast", 23, 3), name
        [mine] = summary.ranks
        assert mine.host_cores == os.cpu_count()
        # Every stage was measured: each FFmpeg decoder was found, and its time read after its
        # last frame and before it was reaped (else decode and encode would be None).
        seconds = {stage: getattr(mine, f"{stage}_cpu_seconds")
                   for stage in ("decode", "infer", "encode")}
        assert None not in seconds.values(), (name, seconds)
        assert seconds["encode"] > 0 and seconds["infer"] > 0, (name, seconds)
        for stage, cpu in seconds.items():
            share = getattr(summary, f"{stage}_core_share")
            assert share == pytest.approx(cpu / (mine.host_cores * summary.run_seconds),
                                          abs=1e-3), (name, stage)
            assert 0 <= share <= 1
        assert summary.host_cpu_busy_fraction == mine.host_cpu_busy_fraction
        assert 0 < summary.device_busy_fraction <= 1  # the network's device: here the CPU
