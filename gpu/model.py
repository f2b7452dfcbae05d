"""Feed-forward style networks and their weight files.

Every network maps RGB frames in [0, 1], shaped (N, 3, H, W), to stylized RGB frames of the
same shape. Any H and W are accepted: the network pads to its stride internally and crops back.

Weights are safetensors files whose metadata names the architecture and its hyper-parameters,
so :func:`load_style_model` needs nothing but the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


class StrengthNorm(nn.InstanceNorm2d):
    """Instance norm whose affine scale and shift also depend on a style strength in [0, 1].

    Conditional instance normalisation (Dumoulin et al. 2017; Babaeizadeh & Ghiasi 2020): the
    owning network computes per-sample offsets from the strength and hands them to
    :meth:`modulate` before each forward pass. :meth:`bake` folds one strength's offsets into
    plain buffers, so inference costs what an unconditioned norm costs.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)
        self.register_buffer("baked_weight", torch.ones(channels), persistent=False)
        self.register_buffer("baked_bias", torch.zeros(channels), persistent=False)
        self.offsets: tuple[torch.Tensor, torch.Tensor] | None = None

    def modulate(self, offsets: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self.offsets = offsets

    def bake(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        with torch.no_grad():
            self.baked_weight.copy_(self.weight + scale)
            self.baked_bias.copy_(self.bias + shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.offsets is None:
            return F.instance_norm(x, weight=self.baked_weight, bias=self.baked_bias,
                                   eps=self.eps)
        scale, shift = self.offsets
        normed = F.instance_norm(x, eps=self.eps)
        weight = (self.weight + scale)[:, :, None, None]
        return normed * weight.to(normed.dtype) + (self.bias + shift)[:, :, None, None].to(
            normed.dtype)


def instance_norm(channels: int, conditioned: bool) -> nn.InstanceNorm2d:
    return StrengthNorm(channels) if conditioned else nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, conditioned: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = instance_norm(channels, conditioned)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = instance_norm(channels, conditioned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(y))


class StrengthEmbedding(nn.Module):
    """A small MLP from a strength in [0, 1] to every conditioned norm's scale and shift offsets.

    Its last layer starts at zero, so a network fine-tuned from unconditioned weights starts
    out painting exactly as those weights do, at every strength.
    """

    def __init__(self, norm_channels: list[int], hidden: int = 64) -> None:
        super().__init__()
        self.norm_channels = norm_channels
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * sum(norm_channels)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, strength: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-norm (scale, shift) offsets, each (N, C), for strengths shaped (N,)."""
        flat = self.mlp(strength.float().reshape(-1, 1))
        offsets, start = [], 0
        for channels in self.norm_channels:
            scale = flat[:, start:start + channels]
            shift = flat[:, start + channels:start + 2 * channels]
            offsets.append((scale, shift))
            start += 2 * channels
        return offsets


def check_strength(strength: float) -> float:
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be within [0, 1], got {strength}")
    return float(strength)


class FixedStrength:
    """Strength control of a network trained without one: only its own strength works."""

    default_strength = 1.0

    def set_strength(self, strength: float) -> None:
        if check_strength(strength) != self.default_strength:
            raise ValueError("this style network has no strength control (it was trained "
                             f"before strength existed); only {self.default_strength} works")


class StyleNet(FixedStrength, nn.Module):
    """Tensor-core friendly style network.

    A ``PixelUnshuffle(4)`` stem replaces the 9x9 convolution on 3 channels, the residual body
    runs at a quarter resolution, and two ``PixelShuffle(2)`` steps bring it back.

    Two heads (``head``): ``"subpixel"`` (the default) runs the last convolution at half
    resolution and shuffles its 12 channels straight into RGB (sub-pixel convolution, as in
    ESPCN), so no tensor wider than 3 channels is written at full resolution; ``"full_res"``
    leaves ``head_width // 2`` channels at full resolution for a last 3x3 convolution, and is
    bound by that memory traffic (docs/performance.md has both speeds).

    ``conditioned=True`` makes every instance norm depend on a style strength in [0, 1]
    (:class:`StrengthNorm`), so one network paints anywhere from near the input (0) to its
    full style (1). Pass per-sample strengths to :meth:`forward` when training; for inference
    call :meth:`set_strength` once and omit them.
    """

    stride = 4
    HEADS = ("full_res", "subpixel")

    def __init__(self, width: int = 64, blocks: int = 5, head_width: int = 32,
                 head: str = "subpixel", conditioned: bool = False) -> None:
        super().__init__()
        if head not in self.HEADS:
            raise ValueError(f"unknown StyleNet head {head!r}; known: {list(self.HEADS)}")
        self.hparams = {"width": width, "blocks": blocks, "head_width": head_width, "head": head}
        if conditioned:
            self.hparams["conditioned"] = True
        self.conditioned = conditioned
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(4),
            nn.Conv2d(48, width, 3, padding=1, padding_mode="reflect"),
            instance_norm(width, conditioned),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(*[ResidualBlock(width, conditioned) for _ in range(blocks)])
        upsample = [
            nn.Conv2d(width, head_width * 4, 3, padding=1, padding_mode="reflect"),
            nn.PixelShuffle(2),
            instance_norm(head_width, conditioned),
            nn.ReLU(inplace=True),
        ]
        if head == "full_res":
            self.head = nn.Sequential(
                *upsample,
                nn.Conv2d(head_width, (head_width // 2) * 4, 3, padding=1,
                          padding_mode="reflect"),
                nn.PixelShuffle(2),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_width // 2, 3, 3, padding=1, padding_mode="reflect"),
            )
        else:
            self.head = nn.Sequential(
                *upsample,
                nn.Conv2d(head_width, 3 * 4, 3, padding=1, padding_mode="reflect"),
                nn.PixelShuffle(2),
            )
        self.norms = [m for m in self.modules() if isinstance(m, StrengthNorm)]
        self.strength_embedding = (StrengthEmbedding([n.num_features for n in self.norms])
                                   if conditioned else None)
        if conditioned:
            self.set_strength(self.default_strength)

    def set_strength(self, strength: float) -> None:
        """Bake ``strength`` into the norms, for inference without per-frame strengths."""
        if self.strength_embedding is None:
            super().set_strength(strength)
            return
        strength = check_strength(strength)
        embedding = self.strength_embedding
        with torch.no_grad():
            offsets = embedding(torch.tensor([strength], device=embedding.mlp[0].weight.device))
        for norm, (scale, shift) in zip(self.norms, offsets, strict=True):
            norm.bake(scale[0], shift[0])

    def forward(self, x: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if strength is not None:
            if self.strength_embedding is None:
                raise ValueError("this style network has no strength control")
            offsets = self.strength_embedding(strength.expand(len(x)))
            for norm, offset in zip(self.norms, offsets, strict=True):
                norm.modulate(offset)
        try:
            y = torch.sigmoid(self.head(self.body(self.stem(x))))
        finally:
            for norm in self.norms:
                norm.modulate(None)
        return y[..., :height, :width]


class ConvLayer(nn.Sequential):
    """Reflection-padded convolution, optionally preceded by nearest-neighbour upsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 upsample: int = 1) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=upsample)] if upsample > 1 else []
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=kernel_size // 2, padding_mode="reflect"))
        super().__init__(*layers)


class TransformerNet(FixedStrength, nn.Module):
    """Johnson et al. (2016) image transformation network, the baseline StyleNet is compared to.

    9x9 convolution on RGB, two stride-2 convolutions, five residual blocks at a quarter
    resolution, two upsample-then-convolve steps (instead of transposed convolutions, which
    leave checkerboard artefacts) and a final 9x9 convolution; instance normalisation throughout.
    """

    stride = 4

    def __init__(self, width: int = 32, blocks: int = 5) -> None:
        super().__init__()
        self.hparams = {"width": width, "blocks": blocks}
        wide, widest = width * 2, width * 4

        def conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
            return [conv, nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *conv_norm_relu(ConvLayer(3, width, 9), width),
            *conv_norm_relu(ConvLayer(width, wide, 3, stride=2), wide),
            *conv_norm_relu(ConvLayer(wide, widest, 3, stride=2), widest),
            *[ResidualBlock(widest) for _ in range(blocks)],
            *conv_norm_relu(ConvLayer(widest, wide, 3, upsample=2), wide),
            *conv_norm_relu(ConvLayer(wide, width, 3, upsample=2), width),
            ConvLayer(width, 3, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return torch.sigmoid(self.net(x))[..., :height, :width]


ARCHITECTURES: dict[str, type[nn.Module]] = {"stylenet": StyleNet, "johnson": TransformerNet}


def build_model(arch: str = "stylenet", **hparams: int | str) -> nn.Module:
    """A freshly initialised network of architecture ``arch``."""
    try:
        return ARCHITECTURES[arch](**hparams)
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}") from None


def arch_name(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture")


def save_weights(model: nn.Module, path: Path, extra: dict[str, str] | None = None) -> None:
    """Save ``model`` as fp16 safetensors with its architecture in the metadata."""
    metadata = {"arch": arch_name(model), "hparams": json.dumps(model.hparams),
                "default_strength": repr(float(model.default_strength)), **(extra or {})}
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous()
               for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, tensors, metadata)


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                      ) -> None:
    """Safetensors under a temporary name, then renamed: no partial file under ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def write_default_strength(path: Path, strength: float) -> None:
    """Rewrite the strength the GPU job paints ``path`` at by default; the tensors stay as they are.

    Raises:
        ValueError: ``strength`` is outside [0, 1], or not 1 for a network without a strength
            control.
    """
    metadata = read_metadata(path)
    conditioned = json.loads(metadata.get("hparams", "{}")).get("conditioned", False)
    if not conditioned and check_strength(strength) != 1.0:
        raise ValueError(f"{path}: no strength control, so it paints at strength 1 only")
    metadata["default_strength"] = repr(check_strength(strength))
    _write_atomically(path, load_file(str(path)), metadata)


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_state_for_finetune(model: nn.Module, path: Path) -> None:
    """Load ``path``'s weights into ``model`` to train on from them.

    A conditioned network may start from an unconditioned one of the same shape: its strength
    embedding, which the file lacks, starts at zero, so it first paints as the file does.
    """
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("strength_embedding.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this network: missing {missing}, "
                         f"unexpected {unexpected}")


def load_style_model(path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a network saved by :func:`save_weights`, in eval mode on ``device`` (fp32 weights)."""
    meta = read_metadata(path)
    if "arch" not in meta:
        raise ValueError(f"{path}: not a restyle model (no 'arch' in its metadata)")
    hparams = json.loads(meta.get("hparams", "{}"))
    if meta["arch"] == "stylenet":
        # Files written before StyleNet had a choice of heads have the full-resolution one.
        hparams.setdefault("head", "full_res")
    model = build_model(meta["arch"], **hparams)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    model.default_strength = check_strength(float(meta.get("default_strength", 1.0)))
    model = model.eval().to(device)
    model.set_strength(model.default_strength)
    return model
