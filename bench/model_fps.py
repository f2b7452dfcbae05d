"""Frames per second of the style networks alone, eager and compiled, and what each costs in
accuracy against an exact fp32 run of the same weights; prints JSON.

For every model, frame size, batch size and variant: the network runs on device-resident
batches of a natural-looking synthetic clip (smooth gradients, drifting blobs, fine noise),
timed with CUDA events after warm-up (the first call, which compiles, is timed on its own),
and its uint8-rounded output is compared with the fp32 eager output on the same frames (PSNR;
100 dB means identical). On CUDA the fp32 reference runs with TF32 off, so it is exact fp32.

    python -m bench.model_fps --sizes 1920x1080,1280x720 --batch-sizes 8,16 \\
        --model gpu/styles/starry_night.safetensors --model johnson --out model_fps.json

``--device cpu --smoke`` runs a tiny version in seconds, for tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpu.jobdir import atomic_write_json
from gpu.model import ARCHITECTURES, arch_name, build_model, load_style_model
from tasks.repo import REPO_ROOT, SHIPPED_STYLES_DIR

SHIPPED_MODEL = SHIPPED_STYLES_DIR / "starry_night.safetensors"
JOHNSON_BASELINE = REPO_ROOT / "bench/baselines/starry_night-johnson.safetensors"
"""The same style trained into Johnson's network, for a like-for-like comparison."""

VARIANTS: dict[str, tuple[torch.dtype, str]] = {
    "fp32-eager": (torch.float32, "none"),
    "bf16-eager": (torch.bfloat16, "none"),
    "bf16-default": (torch.bfloat16, "default"),
    "bf16-reduce-overhead": (torch.bfloat16, "reduce-overhead"),
    "bf16-max-autotune-no-cudagraphs": (torch.bfloat16, "max-autotune-no-cudagraphs"),
    "bf16-max-autotune": (torch.bfloat16, "max-autotune"),
    "bf16-default-frozen": (torch.bfloat16, "default"),  # plus Inductor's freezing
}
"""Variant name -> (compute dtype, torch.compile mode or 'none'). bf16 variants run the way
``gpu.stylize`` does: channels_last weights and inputs, fp32 inputs under bf16 autocast."""
FROZEN = frozenset({"bf16-default-frozen"})
"""Variants compiled with Inductor's ``freezing``: the weights become constants, so their
layout conversions and the folding of constant arithmetic happen once at compile time."""

REFERENCE = "fp32-eager"
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
MAX_PSNR_DB = 100.0
"""Reported when the outputs are identical (the PSNR is infinite)."""
PSNR_TARGET_DB = 40.0
GOAL_SIZE, GOAL_FPS = "1920x1080", 1000.0
"""The issue's goal: the shipped architecture at this many frames/s at this size, within
PSNR_TARGET_DB of the fp32 eager output."""
SMOKE_SIZES = ["96x54"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark the style networks alone")
    parser.add_argument("--model", action="append", default=None,
                        help="an architecture name, optionally with JSON hyper-parameters "
                             "('stylenet:{\"head\": \"subpixel\"}'), for seeded random "
                             "weights, or a .safetensors file; repeat for several (default: "
                             "the shipped starry_night StyleNet and its Johnson baseline, "
                             "seeded if that file is absent)")
    parser.add_argument("--sizes", default="1280x720,1920x1080", help="WxH list, comma-separated")
    parser.add_argument("--batch-sizes", default="8", help="comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="time each variant for at least this long after warm-up")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="per model: start no new measurement of it after this long; the "
                             "rest are listed as skipped (a compile already running is not "
                             "interrupted). Variants run in the order given, so put the ones "
                             "that matter most first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON here, rewritten after every measurement")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny run for tests: sizes {SMOKE_SIZES}, eager variants, batch 2")
    return parser


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def natural_frames(count: int, width: int, height: int, seed: int) -> torch.Tensor:
    """``(count, 3, height, width)`` frames in [0, 1], quantised to 8 bits like decoded video.

    Consecutive frames of a synthetic clip: colour gradients, soft blobs drifting across, and a
    little fine-grained noise, so the network sees edges, flat areas and texture rather than a
    constant or pure noise.
    """
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, width)
    t = torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1) / 30
    frequency = 1 + 3 * torch.rand(1, 3, 1, 1, generator=gen)
    phase = 6.283 * torch.rand(1, 3, 1, 1, generator=gen)
    frames = 0.5 + 0.3 * torch.sin(6.283 * frequency * (xs + 0.5 * ys) + phase + t)
    for _ in range(4):
        cx, cy, vx, vy = torch.rand(4, generator=gen)
        radius = 0.05 + 0.15 * float(torch.rand(1, generator=gen))
        colour = torch.rand(1, 3, 1, 1, generator=gen) - 0.5
        dx = xs - (cx + 0.2 * vx * t) % 1
        dy = ys - (cy + 0.2 * vy * t) % 1
        frames = frames + colour * torch.exp(-(dx**2 + dy**2) / (2 * radius**2))
    coarse = torch.rand(count, 3, max(1, height // 8), max(1, width // 8), generator=gen)
    frames = frames + 0.1 * (F.interpolate(coarse, size=(height, width), mode="bilinear") - 0.5)
    frames = frames + 0.02 * torch.randn(count, 3, height, width, generator=gen)
    return frames.clamp(0, 1).mul(255).round().div(255)


def load_models(specs: list[str], seed: int) -> list[tuple[str, nn.Module]]:
    """(label, fp32 eval network) for each ``--model`` spec."""
    models = []
    for spec in specs:
        arch, _, hparams = spec.partition(":")
        if arch in ARCHITECTURES:
            torch.manual_seed(seed)
            models.append((f"{spec} (seeded)",
                           build_model(arch, **json.loads(hparams or "{}")).eval()))
        else:
            path = Path(spec)
            models.append((path.stem, load_style_model(path)))
    return models


def make_forward(model: nn.Module, variant: str,
                 device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network as one variant runs it: ``forward(x)`` on an fp32 batch in [0, 1]."""
    dtype, mode = VARIANTS[variant]
    low_precision = dtype != torch.float32
    model = copy.deepcopy(model).to(device)
    if low_precision:
        model = model.to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=low_precision):
            return model(x)

    if mode == "none":
        return forward
    # torch.compile takes a mode or an options dict, not both; "default" is no options at all.
    how = {"options": {"freezing": True}} if variant in FROZEN else {"mode": mode}
    compiled = torch.compile(forward, dynamic=False, **how)
    if mode not in CUDA_GRAPH_MODES or device.type != "cuda":
        return compiled

    def replay(x: torch.Tensor) -> torch.Tensor:
        # Each call is a new step: the graphs may reuse the previous call's output memory.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(x)

    return replay


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.float().clamp(0, 1).mul(255).round().to(torch.uint8)


def psnr_db(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """PSNR of uint8 ``candidate`` against uint8 ``reference``, capped at :data:`MAX_PSNR_DB`."""
    mse = (reference.double() - candidate.double()).pow(2).mean().item()
    return MAX_PSNR_DB if mse == 0 else min(MAX_PSNR_DB, 10 * math.log10(255**2 / mse))


class Timer:
    """Wall seconds of a stretch of device work: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> Timer:
        if self.cuda:
            self._start.record()
        else:
            self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000
        else:
            self.seconds = time.perf_counter() - self._started


@torch.inference_mode()
def reference_output(model: nn.Module, frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 output of the exact fp32 network (TF32 off on CUDA)."""
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return to_uint8(model.to(device)(frames.to(device))).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


@torch.inference_mode()
def measure(forward: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor,
            reference: torch.Tensor, device: torch.device, min_seconds: float) -> dict[str, Any]:
    """Warm ``forward`` up, time it, and compare its output on ``frames`` with ``reference``."""
    x = frames.to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    timer = Timer(device)
    with timer:
        output = to_uint8(forward(x)).cpu()  # the first call compiles
    first_call_seconds = timer.seconds
    for _ in range(2):
        forward(x)
    with timer:
        for _ in range(3):
            forward(x)
    iterations = max(3, min(500, math.ceil(min_seconds / max(timer.seconds / 3, 1e-6))))
    with timer:
        for _ in range(iterations):
            forward(x)
    per_batch = timer.seconds / iterations
    return {
        "fps": round(len(frames) / per_batch, 2),
        "ms_per_batch": round(per_batch * 1000, 3),
        "iterations": iterations,
        "first_call_seconds": round(first_call_seconds, 3),
        "psnr_db": round(psnr_db(reference, output), 2),
    }


def best_variants(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and size, the fastest measurement whose PSNR meets :data:`PSNR_TARGET_DB`."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if "fps" not in r or r["psnr_db"] < PSNR_TARGET_DB:
            continue
        key = (r["model"], r["size"])
        if key not in best or r["fps"] > best[key]["fps"]:
            best[key] = r
    return [{k: r[k] for k in ("model", "arch", "size", "variant", "batch", "fps", "psnr_db")}
            for r in best.values()]


def goal(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal for the shipped architecture, and the measurements that meet it."""
    met = [f"{r['variant']} batch {r['batch']}: {r['fps']} fps, {r['psnr_db']} dB"
           for r in results
           if r["arch"] == "stylenet" and r["size"] == GOAL_SIZE and "fps" in r
           and r["fps"] >= GOAL_FPS and r["psnr_db"] >= PSNR_TARGET_DB]
    return {"arch": "stylenet", "size": GOAL_SIZE, "fps": GOAL_FPS, "psnr_db": PSNR_TARGET_DB,
            "met_by": met}


def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # one shape per measurement, as in gpu.stylize
    sizes = SMOKE_SIZES if args.smoke else args.sizes.split(",")
    batch_sizes = [2] if args.smoke else [int(b) for b in args.batch_sizes.split(",")]
    variants = ["fp32-eager", "bf16-eager"] if args.smoke else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    min_seconds = 0.05 if args.smoke else args.min_seconds
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
        "torch": torch.__version__,
        "psnr_reference": f"{REFERENCE}, TF32 off" if use_cuda else REFERENCE,
        "results": [],
    }
    results: list[dict[str, Any]] = report["results"]
    johnson = str(JOHNSON_BASELINE) if JOHNSON_BASELINE.is_file() else "johnson"
    for label, model in load_models(args.model or [str(SHIPPED_MODEL), johnson], args.seed):
        model_started = time.perf_counter()
        inputs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        # Variant-major, in the order given: a --budget-seconds cuts the last variants first.
        for variant in variants:
            for batch in batch_sizes:
                for size in sizes:
                    width, height = parse_size(size)
                    entry: dict[str, Any] = {"model": label, "arch": arch_name(model),
                                             "size": f"{width}x{height}", "batch": batch,
                                             "variant": variant}
                    spent = time.perf_counter() - model_started
                    if args.budget_seconds and spent > args.budget_seconds:
                        entry["skipped"] = "budget"
                    else:
                        if (batch, size) not in inputs:
                            frames = natural_frames(batch, width, height, args.seed)
                            inputs[batch, size] = frames, reference_output(model, frames, device)
                        frames, reference = inputs[batch, size]
                        try:
                            entry |= measure(make_forward(model, variant, device), frames,
                                             reference, device, min_seconds)
                        except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                            entry["error"] = f"{type(err).__name__}: {err}"[:2000]
                        finally:
                            torch.compiler.reset()
                            if use_cuda:
                                torch.cuda.empty_cache()
                    results.append(entry)
                    print(json.dumps(entry), file=sys.stderr, flush=True)
                    report["best"] = best_variants(results)
                    report["goal"] = goal(results)
                    report["seconds"] = round(time.perf_counter() - started, 1)
                    if args.out:
                        atomic_write_json(args.out, report)
    return report

if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
