"""The network step of the job, from raw input planes to YUV 4:2:0 bytes, and its compile."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpu import controls
from gpu.stylize.colour import OUTPUT_MATRIX, raw_to_rgb, rgb_to_yuv420
from gpu.stylize.defaults import CUDA_GRAPH_MODES, DEFAULT_STROKE_SCALE
from gpu.stylize.errors import CompileError
from gpu.stylize.frames import FrameLayout
from gpu.video_io import even_size, yuv420_frame_bytes


@dataclass(frozen=True)
class PaintControls:
    """How the network paints each frame, beside its strength (which the network itself holds,
    see :meth:`gpu.model.StyleNet.set_strength`).

    Attributes:
        stroke_scale: Brush size: the network paints at :func:`gpu.controls.working_size`.
        preserve_colors: Keep the source's colours under the painted luminance.
    """

    stroke_scale: float = DEFAULT_STROKE_SCALE
    preserve_colors: bool = False


class Stylizer:
    """Runs the network on batches of raw decoded frames: bf16 autocast on CUDA, fp32 on the CPU.

    Each batch is painted through :func:`gpu.controls.paint`, the one inference path the quality
    report measures too: resized on the device to the stroke scale's working size (not at all
    when that is the frame's size), painted, resized back, and given the source's colours if
    asked. Only the network runs under autocast; the resizing and colours stay in fp32.

    Under a ``torch.compile`` mode the whole step from the raw planes to YUV 4:2:0 bytes is
    compiled, so the conversions on either side fuse with the network's first and last layers.
    """

    def __init__(self, model: nn.Module, device: torch.device, layout: FrameLayout,
                 compile_mode: str = "none", paint: PaintControls | None = None) -> None:
        self.device = device
        self.layout = layout
        self.paint = paint or PaintControls()
        # (height, width) the network paints at.
        self.working_size = controls.working_size(layout.height, layout.width,
                                                  self.paint.stroke_scale)
        self.cuda = device.type == "cuda"
        self.compile_mode = compile_mode
        self.model = model.to(device, memory_format=torch.channels_last) if self.cuda else model
        self._convert: Callable[[torch.Tensor], torch.Tensor] = self._step
        if compile_mode != "none":
            # One batch shape per job (a short last batch runs padded), so no dynamic shapes.
            self._convert = torch.compile(self._step, mode=compile_mode, dynamic=False)
        # Compiled code, and the algorithms cuDNN picks, hold for one shape: on CUDA or when
        # compiled a short last batch runs at full size all the same (frames are independent).
        self.full_batches = self.cuda or compile_mode != "none"
        if self.cuda:
            # Blocking events put the waiting thread to sleep: by default CUDA spins on a core
            # while the batch runs, a core the x264 encoders, the job's limit, then lack.
            self._started = torch.cuda.Event(enable_timing=True, blocking=True)
            self._finished = torch.cuda.Event(enable_timing=True, blocking=True)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, out: torch.Tensor, count: int) -> float:
        """Stylize the first ``count`` of ``(N, layout.frame_bytes)`` raw host frames into ``out``.

        ``out`` is ``(N, yuv420_frame_bytes(W', H'))`` uint8 planar YUV 4:2:0, ``H'`` and ``W'``
        being ``H`` and ``W`` rounded up to even; the extra row or column repeats the last one,
        so chroma at the edge is not pulled towards black. Returns once ``out`` is filled and
        ``frames`` may be reused.

        Returns:
            Seconds the device spent on the batch: on CUDA, event-timed from the upload to the
            end of the download; on the CPU, the wall time of the call.
        """
        if not self.full_batches:
            frames, out = frames[:count], out[:count]
        if not self.cuda:
            started = time.perf_counter()
            out.copy_(self._convert(frames))
            return time.perf_counter() - started
        stream = torch.cuda.current_stream(self.device)
        self._started.record(stream)
        batch = frames.to(self.device, non_blocking=True)
        if self.compile_mode in CUDA_GRAPH_MODES:
            # The graphs' output memory is reused by the next replay: the previous batch's
            # output has been copied out by now, which is what this call tells them.
            torch.compiler.cudagraph_mark_step_begin()
        out.copy_(self._convert(batch), non_blocking=True)
        self._finished.record(stream)
        self._finished.synchronize()
        return self._started.elapsed_time(self._finished) / 1000

    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        """YUV 4:2:0 rows of stylized raw device frames (see
        :func:`~gpu.stylize.colour.rgb_to_yuv420`)."""
        # RGB comes out channels_last (NHWC in memory), the layout tensor cores want.
        x = raw_to_rgb(frames, self.layout)
        # The colours are kept in the output's matrix: its Cb and Cr planes are the source's.
        y = controls.paint(self._network, x, stroke_scale=self.paint.stroke_scale,
                           keep_colors=self.paint.preserve_colors, matrix=OUTPUT_MATRIX)
        width, height = self.layout.width, self.layout.height
        even_width, even_height = even_size(width, height)
        if not self.paint.preserve_colors:
            # Round through 8-bit RGB first, as if the frames had left the device as RGB24.
            # Kept colours skip it: clamping in RGB would change the source's chroma.
            y = y.clamp_(0, 1).mul_(255).round_().div_(255)
        if (even_width, even_height) != (width, height):
            y = F.pad(y, (0, even_width - width, 0, even_height - height), mode="replicate")
        return rgb_to_yuv420(y)

    def _network(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            return self.model(frames).float()

    def warm_up(self, batch_size: int) -> float:
        """Run the first batches of the job's shape, which compile and autotune; time them.

        Returns:
            Their seconds (0 on the CPU without compilation, where there is nothing to warm).

        Raises:
            CompileError: ``torch.compile`` failed; the message says how to run without it.
        """
        if not self.full_batches:
            return 0.0
        # CUDA graphs need three calls: a plain run, the recording, a first replay.
        calls = 3 if self.compile_mode in CUDA_GRAPH_MODES and self.cuda else 1
        width, height = self.layout.width, self.layout.height
        frames = torch.zeros((batch_size, self.layout.frame_bytes), dtype=torch.uint8)
        out = torch.empty((batch_size, yuv420_frame_bytes(*even_size(width, height))),
                          dtype=torch.uint8)
        started = time.perf_counter()
        try:
            for _ in range(calls):
                self(frames, out, batch_size)
        except Exception as err:
            if self.compile_mode == "none":
                raise
            raise CompileError(
                f"torch.compile(mode={self.compile_mode!r}) failed on the warm-up batch "
                f"({batch_size}x{height}x{width} {self.layout.pix_fmt}): "
                f"{type(err).__name__}: {err}\n"
                "Rerun with --compile none to run the network uncompiled."
            ) from err
        return time.perf_counter() - started


def warm_up_or_fall_back(stylizer: Stylizer, batch_size: int, *, fall_back: bool
                         ) -> tuple[Stylizer, float, str | None]:
    """Warm ``stylizer`` up; if its compile fails and ``fall_back`` (the mode came from
    ``--compile auto``, which promises speed, not a mode), warm up an eager one instead.

    Returns:
        The stylizer to run, its warm-up seconds, and the compile error that was fallen back
        from (``None`` when there was none).

    Raises:
        CompileError: The compile failed and ``fall_back`` is false.
    """
    try:
        return stylizer, stylizer.warm_up(batch_size), None
    except CompileError as err:
        if not fall_back:
            raise
        eager = Stylizer(stylizer.model, stylizer.device, stylizer.layout, paint=stylizer.paint)
        return eager, eager.warm_up(batch_size), str(err).splitlines()[0]


