"""gpu.controls: stroke scale, original colours, and paint() that the job and the report share."""

from __future__ import annotations

import pytest
import torch

from gpu import controls


def bt709_chroma(rgb: torch.Tensor) -> torch.Tensor:
    y = controls.luma(rgb, "bt709")
    return torch.cat([(rgb[:, 2:3] - y) / 1.8556, (rgb[:, 0:1] - y) / 1.5748], dim=1)


@pytest.mark.parametrize(("height", "width"), [(1080, 1920), (2160, 3840)])
def test_working_size_is_the_same_for_any_large_frame(height: int, width: int) -> None:
    assert controls.working_size(height, width, 1.0) == (720, 1280)
    assert controls.working_size(height, width, 2.0) == (360, 640)


def test_a_frame_no_taller_than_the_working_height_is_painted_at_its_own_size() -> None:
    assert controls.working_size(720, 1280, 1.0) == (720, 1280)
    assert controls.working_size(360, 640, 0.5) == (360, 640)
    assert controls.working_size(720, 1280, 2.0) == (360, 640)


def test_working_size_keeps_odd_aspect_ratios_even_and_bounded() -> None:
    assert controls.working_size(1200, 1600, 1.0) == (720, 960)
    h, w = controls.working_size(4000, 8, 4.0)
    assert h % 2 == 0 and w % 2 == 0 and min(h, w) >= controls.MIN_WORKING_SIDE


@pytest.mark.parametrize("scale", [0.0, 0.2, 4.5, float("nan")])
def test_stroke_scale_out_of_range_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="stroke scale"):
        controls.working_size(720, 1280, scale)


def test_preserve_colors_keeps_the_source_chroma_and_the_painted_luma() -> None:
    torch.manual_seed(0)
    # Saturated colours too: nothing is clamped, so the chroma survives even off the RGB cube.
    source = torch.rand(2, 3, 8, 8)
    painted = torch.rand(2, 3, 8, 8)
    kept = controls.preserve_colors(painted, source, "bt709")
    assert torch.allclose(bt709_chroma(kept), bt709_chroma(source), atol=1e-6)
    assert torch.allclose(controls.luma(kept), controls.luma(painted), atol=1e-6)
    assert not torch.allclose(kept, painted, atol=1e-2)


def test_unknown_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match="colour matrix"):
        controls.luma(torch.zeros(1, 3, 2, 2), "bt2020")


def test_paint_runs_the_network_at_the_working_size_and_returns_the_frame_size() -> None:
    seen: list[tuple[int, int]] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return 1 - x

    ramp = torch.linspace(0, 1, 1280).expand(1, 3, 1080, 1280)  # smooth: resizing keeps it
    frames = ramp.contiguous()
    out = controls.paint(network, frames, stroke_scale=2.0)
    assert seen == [(360, 426)]
    assert out.shape == frames.shape
    assert (out - (1 - frames)).abs().max() < 0.02


def test_paint_skips_the_resize_when_the_frame_is_the_working_size() -> None:
    frames = torch.rand(1, 3, 720, 1280)
    out = controls.paint(lambda x: 1 - x, frames)
    assert torch.equal(out, 1 - frames)
