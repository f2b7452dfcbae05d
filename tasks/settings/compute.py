"""Compute settings: where the GPU job runs, its options, the painting controls and retries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gpu.jobdir import EncodeSettings


class ComputeSettings(BaseModel):
    """Where and how the GPU job runs, and the GPU job's own options."""

    backend: Literal["local", "azureml"] = Field(
        default="local", description="'local' runs mpiexec here; 'azureml' submits a command job."
    )
    ranks: int = Field(default=2, ge=1, description="MPI ranks for the local backend.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Device of the local GPU job (--device); auto picks CUDA when present. The "
        "azureml backend always asks for CUDA, so a node whose GPU torch cannot use fails at "
        "once instead of stylizing on its CPU while the GPU bills.",
    )
    chunk_seconds: float = Field(
        default=4.0, gt=0,
        description="The longest chunk handed to a rank, in seconds; a video's frames are "
        "shared evenly among as few chunks as that allows. Each chunk is one x264 process with "
        "a fixed start-up cost, so longer chunks waste less; a retry redoes work a chunk at a "
        "time (docs/performance.md).",
    )
    chunk_codec: Literal["auto", "utvideo", "rawvideo"] = Field(
        default="auto",
        description="How the chunks handed to the GPU job store their (identical, lossless) "
        "pixels. 'utvideo': compressed, decoded by FFmpeg on the GPU host's CPUs. 'rawvideo': "
        "raw planes read straight into the job's buffers, sparing those CPUs the decoding for "
        "several times the bytes. 'auto': rawvideo for the local backend when the raw chunks "
        "take at most half the work folder's free disk, utvideo otherwise and for azureml, "
        "whose chunks travel through Blob Storage.",
    )
    compile: Literal["auto", "none", "default", "reduce-overhead", "max-autotune",
                     "max-autotune-no-cudagraphs"] = Field(
        default="auto",
        description="torch.compile mode of the GPU job (--compile). 'auto': CUDA graphs "
        "('reduce-overhead') on CUDA when each rank's share is long enough to win back the "
        "compile, eager otherwise or if that compile fails; a mode named here that fails to "
        "compile fails the job.",
    )
    crf: int = Field(
        default=EncodeSettings.crf, ge=0, le=51,
        description="x264 CRF of the stylized video (the job reads it from its manifest).",
    )
    preset: str = Field(
        default=EncodeSettings.preset,
        description="x264 preset of the stylized video. The default, superfast at CRF 17, "
        "matches the quality of veryfast at CRF 18 and encodes faster; ultrafast at CRF 18 is "
        "the fastest choice and faster at CRF 20 the smallest file (docs/encode_quality.md).",
    )
    batch_size: int = Field(
        default=0, ge=0,
        description="Frames per forward pass (--batch-size); 0: the job's default, 16 on CUDA "
        "up to 1080p (fewer for larger frames) and 2 on the CPU.",
    )
    encoders: int = Field(
        default=0, ge=0,
        description="Chunks each rank keeps in flight, each with its own FFmpeg decoder and "
        "x264 encoder (--encoders); 0: one per two of the rank's threads.",
    )
    encoder_threads: int = Field(
        default=0, ge=0,
        description="x264 threads of each chunk in flight (--encoder-threads); 0: all of the "
        "rank's threads.",
    )
    threads: int = Field(
        default=0, ge=0,
        description="CPU threads per rank, torch's and its FFmpeg processes' (--threads); 0: "
        "the node's cores shared among its ranks.",
    )
    strength: float | None = Field(
        default=None, ge=0, le=1,
        description="How strongly the style paints, 0 (near the input) to 1 (the full style); "
        "unset: each style's own default, the strongest that keeps the video's subjects "
        "recognizable (docs/strength.json).",
    )
    stroke_scale: float = Field(
        default=1.0, ge=0.25, le=4,
        description="Brush size: the network paints at 720 / stroke_scale lines (never more "
        "than the frame's), so 2 doubles the strokes and 720p and 1080p look alike.",
    )
    preserve_colors: bool = Field(
        default=False,
        description="Keep the video's own colours under the painted luminance.",
    )
    max_waiting_batches: int = Field(
        default=0, ge=0,
        description="Start a new chunk only while at most this many batches wait for the "
        "network (--max-waiting-batches), so a network-bound rank keeps few chunks in flight "
        "and the last ones spread over the ranks; 0: start one whenever a lane is free.",
    )
    gpu_attempts: int = Field(
        default=3, ge=1,
        description="Runs of the GPU step in all, on either backend: a rank that dies (killed, "
        "out of memory) or a node that is lost or preempted is retried until this many runs; "
        "each retry keeps the finished chunks and redoes only the rest. Bad input and errors "
        "of the job itself fail at once.",
    )
    retry_backoff_seconds: float = Field(
        default=10.0, ge=0,
        description="Wait before the first retry of the GPU step; it doubles for each retry "
        "after that.",
    )

    def with_controls(self, strength: float | None = None, stroke_scale: float | None = None,
                      preserve_colors: bool | None = None) -> ComputeSettings:
        """These settings with a run's own painting controls (None keeps the setting), checked
        against the same bounds."""
        given = {"strength": strength, "stroke_scale": stroke_scale,
                 "preserve_colors": preserve_colors}
        return ComputeSettings.model_validate(
            {**self.model_dump(), **{k: v for k, v in given.items() if v is not None}})

    def stylize_args(self) -> tuple[str, ...]:
        """The ``gpu.stylize`` options these settings set, after ``--input`` and ``--output``.

        Options left at 0 are not passed, so the job's own defaults apply.
        """
        args = ["--device", self.device, "--compile", self.compile]
        if self.strength is not None:
            args += ["--strength", repr(self.strength)]
        if self.stroke_scale != 1.0:
            args += ["--stroke-scale", repr(self.stroke_scale)]
        if self.preserve_colors:
            args.append("--preserve-colors")
        for option, value in (
            ("--batch-size", self.batch_size),
            ("--encoders", self.encoders),
            ("--encoder-threads", self.encoder_threads),
            ("--threads", self.threads),
            ("--max-waiting-batches", self.max_waiting_batches),
        ):
            if value:
                args += [option, str(value)]
        return tuple(args)
