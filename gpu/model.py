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

    Two heads (``head``):

    * ``"subpixel"`` (the default, and the shipped styles'): the last convolution runs at half
      resolution and its 12 channels are shuffled straight into RGB (sub-pixel convolution, as
      in ESPCN), so no tensor wider than 3 channels is ever written at full resolution.
      0.48 M parameters, 125 GFLOP per 1920x1080 frame. On one H200, bf16, batches of 8 1080p
      frames, untrained weights: 350 frames/s eager and 1289 under ``torch.compile``
      (docs/arch_candidates.json).
    * ``"full_res"``, the first shipped set's: the second shuffle leaves ``head_width // 2``
      channels at full resolution and a last 3x3 convolution maps them to RGB. 0.49 M
      parameters, 143 GFLOP; 269 frames/s eager and 983 compiled in the same run. Its wide
      full-resolution tensors, not its arithmetic, bound it: they are most of its memory
      traffic.

    Johnson's TransformerNet, for comparison: 1.68 M parameters, 638 GFLOP.
    """

    stride = 4
    HEADS = ("full_res", "subpixel")

    def __init__(self, width: int = 64, blocks: int = 5, head_width: int = 32,
                 head: str = "subpixel") -> None:
        super().__init__()
        if head not in self.HEADS:
            raise ValueError(f"unknown StyleNet head {head!r}; known: {list(self.HEADS)}")
        self.hparams = {"width": width, "blocks": blocks, "head_width": head_width, "head": head}
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(4),
            nn.Conv2d(48, width, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        upsample = [
            nn.Conv2d(width, head_width * 4, 3, padding=1, padding_mode="reflect"),
            nn.PixelShuffle(2),
            nn.InstanceNorm2d(head_width, affine=True),
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        y = torch.sigmoid(self.head(self.body(self.stem(x))))
        return y[..., :height, :width]


class ConvLayer(nn.Sequential):
    """Reflection-padded convolution, optionally preceded by nearest-neighbour upsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 upsample: int = 1) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=upsample)] if upsample > 1 else []
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=kernel_size // 2, padding_mode="reflect"))
        super().__init__(*layers)


class TransformerNet(nn.Module):
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
    hparams = json.loads(meta.get("hparams", "{}"))
    if meta["arch"] == "stylenet":
        # Files written before StyleNet had a choice of heads have the full-resolution one.
        hparams.setdefault("head", "full_res")
    model = build_model(meta["arch"], **hparams)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.eval().to(device)
