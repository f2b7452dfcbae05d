"""bench.quality.networks: the GPU job's own network step on RGB frames, and its timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.quality import networks
from bench.quality.report import job_stylizers
from gpu.jobdir import InputFormat
from gpu.model import build_model, save_weights
from gpu.stylize.colour import yuv420_to_rgb
from gpu.stylize.frames import FrameLayout
from gpu.stylize.stylizer import PaintControls, Stylizer
from gpu.video_io import even_size, yuv420_frame_bytes

TINY = {"width": 8, "blocks": 1, "head_width": 8}
CPU = torch.device("cpu")
# Taller than the working height at stroke scale 4 (180 lines), and odd in both sides: the
# network paints a shrunk frame, and the job pads to even sizes.
HEIGHT, WIDTH = 201, 243


def conditioned_net(seed: int = 0) -> torch.nn.Module:
    """A seeded untrained network whose strengths paint differently."""
    torch.manual_seed(seed)
    model = build_model("stylenet", conditioned=True, **TINY).eval()
    with torch.no_grad():  # a trained embedding is not zero: make strengths differ
        model.strength_embedding.mlp[-1].weight.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return (np.random.default_rng(0).random((2, HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)


def job_output(frames: np.ndarray, strength: float, paint: PaintControls) -> np.ndarray:
    """What the GPU job's network step writes for ``frames`` given as planar RGB, as RGB."""
    model = conditioned_net()
    model.set_strength(strength)
    layout = FrameLayout(WIDTH, HEIGHT, InputFormat("gbrp", None, "rawvideo"))
    red, green, blue = (frames[..., channel] for channel in range(3))
    raw = torch.from_numpy(np.stack([green, blue, red], 1).reshape(len(frames), -1).copy())
    out = torch.empty((len(frames), yuv420_frame_bytes(*even_size(WIDTH, HEIGHT))),
                      dtype=torch.uint8)
    Stylizer(model, CPU, layout, paint=paint)(raw, out, len(frames))
    rgb = yuv420_to_rgb(out, *even_size(WIDTH, HEIGHT), "bt709")[..., :HEIGHT, :WIDTH]
    return (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("strength, paint", [
    (1.0, PaintControls()),
    (0.3, PaintControls(stroke_scale=4.0, preserve_colors=True)),
])
def test_the_bench_paints_exactly_what_the_job_writes(frames: np.ndarray, strength: float,
                                                      paint: PaintControls) -> None:
    stylizer = networks.JobStylizer(conditioned_net(), CPU, strength, paint)
    painted = stylizer(frames)
    assert painted.shape == frames.shape and painted.dtype == np.uint8
    np.testing.assert_array_equal(painted, job_output(frames, strength, paint))
    # One frame at a time paints each frame as the batch does.
    np.testing.assert_array_equal(stylizer(frames[1:]), painted[1:])


@pytest.mark.slow
def test_every_control_changes_what_the_bench_measures(frames: np.ndarray) -> None:
    def painted(strength: float | None, paint: PaintControls) -> np.ndarray:
        return networks.JobStylizer(conditioned_net(), CPU, strength, paint)(frames)

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    plain = painted(0.6, PaintControls())
    assert gap(painted(0.2, PaintControls()), plain) > 1
    assert gap(painted(0.6, PaintControls(stroke_scale=4.0)), plain) > 1
    assert gap(painted(0.6, PaintControls(preserve_colors=True)), plain) > 1
    np.testing.assert_array_equal(painted(0.6, PaintControls()), plain)  # deterministic
    # No strength: the network's own default, as the job's.
    np.testing.assert_array_equal(painted(None, PaintControls()),
                                  painted(conditioned_net().default_strength, PaintControls()))


def test_a_strength_a_network_cannot_paint_at_is_refused_naming_its_file(
        tmp_path: Path) -> None:
    fixed = tmp_path / "texture-johnson.safetensors"
    save_weights(build_model("johnson", width=4, blocks=1), fixed, extra={"style": "texture"})
    assert job_stylizers({"b": fixed}, CPU, None, PaintControls())["b"].strength == 1.0
    with pytest.raises(ValueError, match="texture-johnson.safetensors: --strength 0.5"):
        job_stylizers({"b": fixed}, CPU, 0.5, PaintControls())
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        networks.JobStylizer(conditioned_net(), CPU, 1.5)


class RecordingStylizer:
    """Stands in for :class:`networks.JobStylizer`: records batch shapes, returns its input and
    a millisecond a frame as the job's time."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        self.shapes.append(frames.shape)
        return frames, 0.001 * len(frames)


def test_measure_speed_fills_the_batch_warms_up_each_shape_and_counts_the_jobs_time() -> None:
    stylizer = RecordingStylizer()
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    clip = np.zeros((10, 8, 12, 3), np.uint8)
    speed = networks.measure_speed(stylizer, frames, {"clip": clip}, 4)
    # Only the timed pass counts, at the job's own seconds.
    assert speed == {"batch": 4, "ms_per_frame_batch_1": pytest.approx(1.0),
                     "ms_per_frame_batched": pytest.approx(1.0),
                     "clip_frames_per_second_batched": {"clip": pytest.approx(1000.0)}}
    batch_1 = [(1, 16, 16, 3)] * 3
    batched = [(4, 16, 16, 3)] * networks.SPEED_REPEATS
    clip_batches = [(4, 8, 12, 3), (4, 8, 12, 3), (2, 8, 12, 3)]
    # Each measurement runs twice: untimed, then timed.
    assert stylizer.shapes == 2 * batch_1 + 2 * batched + 2 * clip_batches


def test_speedups_divide_gatys_solo_seconds_by_ours() -> None:
    speed = {"ms_per_frame_batch_1": 2.0, "ms_per_frame_batched": 0.5}
    assert networks.speedups(speed, 26.0) == {"gatys_solo_wall_seconds_per_frame": 26.0,
                                              "speedup_vs_gatys_batched": pytest.approx(52_000),
                                              "speedup_vs_gatys_batch_1": pytest.approx(13_000)}
    assert networks.speedups(speed, None)["speedup_vs_gatys_batched"] is None
