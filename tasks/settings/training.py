"""Training settings: how the ``train-style`` flow trains a new style."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from tasks.repo import REPO_ROOT


class TrainingSettings(BaseModel):
    """How the ``train-style`` flow trains a new style (the arguments of ``gpu.train``)."""

    content_dir: Path = Field(
        default=REPO_ROOT / ".carry" / "content" / "train",
        description="Content set the network learns to restyle: a folder of .jpg/.png/.webp "
        "images or a packed .pt/.npy uint8 (N, H, W, 3) tensor. "
        "`python tools/assemble_content.py` builds the default folder.",
    )
    steps: int = Field(default=1500, ge=1, description="Optimizer steps (about 75 s on an H200).")
    batch_size: int = Field(default=16, ge=1, description="Training crops per rank and step.")
    image_size: int = Field(default=256, ge=16, description="Side of the square training crops.")
    content_size: int = Field(
        default=320, ge=16, description="Square side content images are resized to first."
    )
    style_size: int = Field(
        default=512, ge=16, description="Long side the style image is resized to for its Grams."
    )
    arch: Literal["stylenet", "johnson"] = Field(
        default="stylenet", description="Network architecture (gpu/model.py)."
    )
    model_hparams: dict[str, int | str] = Field(
        default_factory=dict,
        description='Architecture hyper-parameters, e.g. {"width": 48} or {"head": "full_res"}; '
        "empty: the defaults (the shipped styles' architecture).",
    )
    conditioned: bool = Field(
        default=True,
        validate_default=True,  # the architecture check below runs when this is left at true
        description="Train one network for every strength (gpu.train --conditioned), so a new "
        "style takes the strength control as the shipped ones do; stroke_scale and "
        "preserve_colors work either way. false: a network that paints at strength 1 only.",
    )
    default_strength: float | None = Field(
        default=None, ge=0, le=1,
        description="Strength a new conditioned style paints at when a run asks for none, stored "
        "in its weights. Unset: gpu.train's default for new styles, 0.5, below every shipped "
        "style's measured default (docs/strength.json); "
        "`python -m bench.quality.strength` measures a style's own.",
    )
    style_weight: float = Field(
        default=5.0, gt=0,
        description="Weight of the Gram style loss against the content loss (1). The shipped "
        "styles used 2-15 (gpu/styles/manifest.json); at 1 the first shipped set stayed 2-4x "
        "short of Gatys' style loss. Raise it for a stronger look, lower it to keep more of "
        "the frame.",
    )
    structure_weight: float = Field(
        default=2.0, ge=0,
        description="Weight of the structure loss (gpu.losses.structure_loss), which keeps the "
        "frame's tone and outlines while the style repaints its strokes and palette. At 2, "
        "starry_night kept Gatys' structure at full strength; 0 trains without it.",
    )
    max_seconds: float | None = Field(
        default=None, gt=0, description="Stop training after this many seconds even before steps."
    )

    @field_validator("conditioned")
    @classmethod
    def _strength_needs_stylenet(cls, conditioned: bool, info: ValidationInfo) -> bool:
        if conditioned and info.data.get("arch", "stylenet") != "stylenet":
            raise ValueError(
                f"training.conditioned needs arch 'stylenet': {info.data['arch']!r} has no "
                "strength control (set RESTYLE_TRAINING__CONDITIONED=false to train it)"
            )
        return conditioned

    @field_validator("default_strength")
    @classmethod
    def _default_needs_conditioning(cls, strength: float | None,
                                    info: ValidationInfo) -> float | None:
        if strength is not None and not info.data.get("conditioned", True):
            raise ValueError(
                "training.default_strength applies to conditioned networks only; an "
                "unconditioned one paints at strength 1 (unset RESTYLE_TRAINING__DEFAULT_STRENGTH "
                "or set RESTYLE_TRAINING__CONDITIONED=true)"
            )
        return strength
