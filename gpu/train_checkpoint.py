"""What a ``gpu.train`` run is and where it stands: its recorded settings and its checkpoint.

The settings go into the weights' metadata; a checkpoint records them too, and a rerun into the
same folder resumes from it only with the same architecture and style.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from torch import nn

from gpu.jobdir import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


def model_hparams(args: argparse.Namespace) -> dict:
    """The architecture's hyper-parameters, ``conditioned`` included when it is."""
    return {**args.model_hparams, **({"conditioned": True} if args.conditioned else {})}


def training_settings(args: argparse.Namespace, world_size: int) -> dict:
    """Settings recorded in the weights' metadata and checked when resuming."""
    return {"arch": args.arch, "hparams": model_hparams(args), "steps": args.steps,
            "batch_size": args.batch_size, "world_size": world_size,
            "image_size": args.image_size, "style_size": args.style_size,
            "content_layer": args.content_layer, "content_weight": args.content_weight,
            "style_weight": args.style_weight, "tv_weight": args.tv_weight,
            "structure_weight": args.structure_weight,
            "temporal_weight": args.temporal_weight, "max_shift": args.max_shift,
            "identity_weight": args.identity_weight if args.conditioned else 0.0,
            "init_weights": args.init_weights.name if args.init_weights else None,
            "noise": args.noise, "lr": args.lr, "lr_schedule": args.lr_schedule,
            "seed": args.seed}


def load_checkpoint(path: Path, settings: dict, style_name: str) -> dict | None:
    """The checkpoint at ``path``, or None if there is none.

    Raises:
        ValueError: it belongs to another architecture or style.
    """
    if not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("arch", "hparams"):
        if checkpoint["settings"][key] != settings[key]:
            raise ValueError(f"{path} was trained with {key}={checkpoint['settings'][key]!r}, "
                             f"not {settings[key]!r}; delete it to start over")
    if checkpoint["style_name"] != style_name:
        raise ValueError(f"{path} belongs to style {checkpoint['style_name']!r}, not "
                         f"{style_name!r}; delete it to start over")
    return checkpoint


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    settings: dict, style_name: str, seconds: float,
                    losses: dict[str, float]) -> None:
    """Write the run's state after ``step`` steps atomically, so a preempted run resumes."""
    buffer = io.BytesIO()
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "settings": settings, "style_name": style_name, "seconds": seconds,
                "losses": losses}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
