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


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(y))


class StyleNet(nn.Module):
    """Tensor-core friendly style network.

    A ``PixelUnshuffle(4)`` stem replaces the 9x9 convolution on 3 channels, the residual body
    runs at a quarter resolution, and two ``PixelShuffle(2)`` steps bring it back.
    """

    stride = 4

    def __init__(self, width: int = 64, blocks: int = 5, head_width: int = 32) -> None:
        super().__init__()
        self.hparams = {"width": width, "blocks": blocks, "head_width": head_width}
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(4),
            nn.Conv2d(48, width, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.head = nn.Sequential(
            nn.Conv2d(width, head_width * 4, 3, padding=1, padding_mode="reflect"),
            nn.PixelShuffle(2),
            nn.InstanceNorm2d(head_width, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_width, (head_width // 2) * 4, 3, padding=1, padding_mode="reflect"),
            nn.PixelShuffle(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_width // 2, 3, 3, padding=1, padding_mode="reflect"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = torch.sigmoid(self.head(self.body(self.stem(x))))
        return y[..., :height, :width]


ARCHITECTURES: dict[str, type[nn.Module]] = {"stylenet": StyleNet}


def build_model(arch: str = "stylenet", **hparams: int) -> nn.Module:
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
    metadata = {"arch": arch_name(model), "hparams": json.dumps(model.hparams), **(extra or {})}
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous()
               for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_style_model(path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a network saved by :func:`save_weights`, in eval mode on ``device`` (fp32 weights)."""
    meta = read_metadata(path)
    if "arch" not in meta:
        raise ValueError(f"{path}: not a restyle model (no 'arch' in its metadata)")
    model = build_model(meta["arch"], **json.loads(meta.get("hparams", "{}")))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.eval().to(device)
