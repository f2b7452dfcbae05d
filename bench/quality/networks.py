"""Our networks exactly as the GPU job runs them, on RGB frames, and their time per frame.

:class:`JobStylizer` hands each batch to the job's own network step,
:class:`gpu.stylize.stylizer.Stylizer`, with the job's controls: strength baked into the network
(:meth:`gpu.model.StyleNet.set_strength`), stroke scale and original colours
(:class:`~gpu.stylize.stylizer.PaintControls`, painted through :func:`gpu.controls.paint`).
Frames go in as lossless planar RGB (``gbrp``, as the job's RGB chunks), and what comes out is
the job's BT.709 YUV 4:2:0, decoded back to RGB as a player does: the report scores the frames
users get, before the encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gpu.jobdir import InputFormat
from gpu.stylize.colour import OUTPUT_MATRIX, yuv420_to_rgb
from gpu.stylize.frames import FrameLayout
from gpu.stylize.stylizer import PaintControls, Stylizer
from gpu.video_io import even_size, yuv420_frame_bytes

# Timed repetitions of a batched call: one batch of 8 frames at 512 px is well under a
# millisecond per frame on an H200, too short to time alone.
SPEED_REPEATS = 5
RGB_INPUT = InputFormat("gbrp", None, "rawvideo")


def rgb_to_gbrp(frames: np.ndarray) -> np.ndarray:
    """``(N, 3*H*W)`` rows of FFmpeg's planar ``gbrp`` (G, B, R planes) of (N, H, W, 3) RGB."""
    return np.ascontiguousarray(frames[..., [1, 2, 0]].transpose(0, 3, 1, 2)).reshape(
        len(frames), -1)


class JobStylizer:
    """Paints uint8 RGB frames (N, H, W, 3) as the GPU job does; see the module's docstring.

    One job :class:`~gpu.stylize.stylizer.Stylizer` (whose frame layout is fixed) and one pair
    of host buffers (pinned on CUDA, as the job's) per batch shape, all on the same network.

    Args:
        model: A loaded style network on ``device``.
        strength: As the job's ``--strength``; None: the network's own default strength.
        paint: Stroke scale and original colours, as the job's options give them.

    Raises:
        ValueError: The network cannot paint at ``strength`` (out of [0, 1], or a network
            trained without a strength control).
    """

    def __init__(self, model: nn.Module, device: torch.device, strength: float | None = None,
                 paint: PaintControls | None = None) -> None:
        self.strength = model.default_strength if strength is None else strength
        model.set_strength(self.strength)
        self.model, self.device = model, device
        self.paint = paint or PaintControls()
        self._steps: dict[tuple[int, int, int], tuple[Stylizer, torch.Tensor, torch.Tensor]] = {}

    def _step(self, count: int, height: int, width: int
              ) -> tuple[Stylizer, torch.Tensor, torch.Tensor]:
        key = (count, height, width)
        if key not in self._steps:
            layout = FrameLayout(width, height, RGB_INPUT)
            pinned = self.device.type == "cuda"
            raw = torch.empty((count, layout.frame_bytes), dtype=torch.uint8, pin_memory=pinned)
            out = torch.empty((count, yuv420_frame_bytes(*even_size(width, height))),
                              dtype=torch.uint8, pin_memory=pinned)
            self._steps[key] = (Stylizer(self.model, self.device, layout, paint=self.paint),
                                raw, out)
        return self._steps[key]

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """The painted frames (uint8 RGB, the input's shape) and the job's seconds for them.

        The seconds are what the job's stylizer reports for the batch (on CUDA, event-timed
        from the upload to the end of the download), so the repacking and decoding done here
        are not counted.
        """
        count, height, width = frames.shape[:3]
        stylizer, raw, out = self._step(count, height, width)
        raw.numpy()[:] = rgb_to_gbrp(frames)
        seconds = stylizer(raw, out, count)
        # The job pads odd sizes to even by repeating the last row or column: cut that off.
        rgb = yuv420_to_rgb(out, *even_size(width, height), OUTPUT_MATRIX)[..., :height, :width]
        painted = rgb.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return painted.numpy(), seconds

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.run(frames)[0]


def pick_device(choice: str) -> torch.device:
    """``--device``: ``auto`` takes CUDA when there is one."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(choice)


def device_name(device: torch.device) -> str:
    """The device as reports and Gatys cache records name it: the GPU's model, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def stylize_clip(stylizer: JobStylizer, frames: np.ndarray, batch: int
                 ) -> tuple[np.ndarray, float]:
    """Stylize a clip (T, H, W, 3) in batches of ``batch`` frames; the job's seconds for it."""
    runs = [stylizer.run(frames[i:i + batch]) for i in range(0, len(frames), batch)]
    return np.concatenate([painted for painted, _ in runs]), sum(seconds for _, seconds in runs)


def measure_speed(stylizer: JobStylizer, frames: list[np.ndarray],
                  clips: dict[str, np.ndarray], batch: int) -> dict:
    """Milliseconds per held-out frame at batch 1 and at ``batch``; frames/s on each clip.

    Each figure is the job's own time for its batches (:meth:`JobStylizer.run`). Every
    measurement follows an untimed run of the same calls (cuDNN autotunes per input shape).
    The held-out frames are repeated to fill a batch when there are fewer of them.
    """
    def seconds(work: Callable[[], float]) -> float:
        work()  # warm-up
        return work()

    stacked = np.stack([frames[index % len(frames)] for index in range(batch)])
    batch_1 = seconds(lambda: sum(stylizer.run(frame[None])[1] for frame in frames))
    batched = seconds(lambda: sum(stylizer.run(stacked)[1] for _ in range(SPEED_REPEATS)))
    return {"batch": batch,
            "ms_per_frame_batch_1": 1000.0 * batch_1 / len(frames),
            "ms_per_frame_batched": 1000.0 * batched / (SPEED_REPEATS * batch),
            "clip_frames_per_second_batched": {
                name: len(clip) / seconds(lambda clip=clip: stylize_clip(stylizer, clip, batch)[1])
                for name, clip in clips.items()}}


def speedups(speed: dict, gatys_seconds_per_frame: float | None) -> dict:
    """Gatys' wall seconds per frame, run alone, over our seconds per frame (None: no Gatys)."""
    def speedup(ms_per_frame: float) -> float | None:
        if gatys_seconds_per_frame is None:
            return None
        return gatys_seconds_per_frame / (ms_per_frame / 1000.0)

    return {"gatys_solo_wall_seconds_per_frame": gatys_seconds_per_frame,
            "speedup_vs_gatys_batched": speedup(speed["ms_per_frame_batched"]),
            "speedup_vs_gatys_batch_1": speedup(speed["ms_per_frame_batch_1"])}
