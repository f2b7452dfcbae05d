"""Training losses: Johnson content, Gram style, TV, structure, temporal; what strength means.

Content and style losses are divided by the mean square of their target (the content features,
each style Gram), so every layer starts near 1 whatever the VGG feature scale and the weights
stay comparable across layers and styles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gpu.controls import luma
from gpu.vgg import VGG19Features

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Strength 1 weighs the style fully and each quarter step below it about a third as much, so
# equal steps of strength look like equal steps of style (the perceived strength of a
# feed-forward style follows the logarithm of its style weight).
STRENGTH_WEIGHT_RANGE = 100.0


def style_weight_share(strength: torch.Tensor) -> torch.Tensor:
    """The share of the full style weight that ``strength`` in [0, 1] trains with (0 to 1)."""
    k = math.log(STRENGTH_WEIGHT_RANGE)
    return torch.expm1(k * strength) / math.expm1(k)


def identity_share(strength: torch.Tensor) -> torch.Tensor:
    """The share of the pixel-identity weight at ``strength``: it anchors 0 to the input."""
    return (1 - strength) ** 4



STRUCTURE_POOL = 4


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame Pearson correlation of two (N, ...) tensors."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / ((a * a).sum(dim=1) * (b * b).sum(dim=1)).sqrt().clamp_min(1e-8)


def structure_loss(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Each frame's structure loss: does the painting keep the frame's tone and outlines?

    SSIM's structure term (Wang et al. 2004: a correlation, blind to brightness and contrast)
    taken over the whole frame, on the 4x4-pooled luminance and on its gradient magnitude:
    ``(1 - r_tone) + (1 - r_edges)``, 0 for the same picture. Strokes finer than the pooling are
    free and the palette (chroma) is free; a white face painted dark or an outline painted over
    is not. Shape (N,), in fp32.
    """
    def pooled_luma(images: torch.Tensor) -> torch.Tensor:
        # BT.709, as the structure score (bench.quality.structure) weighs the channels.
        return F.avg_pool2d(luma(images.float(), "bt709"), STRUCTURE_POOL)

    def edges(luma: torch.Tensor) -> torch.Tensor:
        dx = luma[..., :-1, 1:] - luma[..., :-1, :-1]
        dy = luma[..., 1:, :-1] - luma[..., :-1, :-1]
        return (dx.square() + dy.square() + 1e-6).sqrt()

    with torch.autocast(stylized.device.type, enabled=False):
        ours, theirs = pooled_luma(stylized), pooled_luma(content)
        return (1 - _pearson(ours, theirs)) + (1 - _pearson(edges(ours), edges(theirs)))


def gram(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrices F F^T / (C H W), in fp32, shaped (N, C, C)."""
    n, c, h, w = features.shape
    # Under bf16 autocast bmm would round the sums of h*w products; keep them in fp32.
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().reshape(n, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Johnson content, Gram style and TV losses against one style image."""

    def __init__(self, vgg: VGG19Features, style: torch.Tensor, content_layer: str,
                 style_layers: tuple[str, ...] = STYLE_LAYERS) -> None:
        super().__init__()
        self.vgg, self.content_layer, self.style_layers = vgg, content_layer, style_layers
        with torch.no_grad(), torch.autocast(style.device.type, enabled=False):
            features = vgg(style)
            targets = [gram(features[name].float()) for name in style_layers]
        for name, target in zip(style_layers, targets, strict=True):
            self.register_buffer(f"gram_{name}", target)
            self.register_buffer(f"gram_scale_{name}", target.square().mean())

    def forward(self, stylized: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses averaged over the batch; ``style_per_sample`` holds each frame's style loss."""
        with torch.no_grad():
            target = self.vgg(content)[self.content_layer].float()
        features = self.vgg(stylized)
        content_loss = F.mse_loss(features[self.content_layer].float(), target)
        style_loss = stylized.new_zeros(len(stylized), dtype=torch.float32)
        for name in self.style_layers:
            target_gram = getattr(self, f"gram_{name}")
            error = (gram(features[name]) - target_gram).square().mean(dim=(1, 2))
            style_loss = style_loss + error / getattr(self, f"gram_scale_{name}")
        out = stylized.float()
        tv = ((out[..., 1:, :] - out[..., :-1, :]).abs().mean()
              + (out[..., :, 1:] - out[..., :, :-1]).abs().mean())
        return {"content": content_loss / target.square().mean().clamp_min(1e-8),
                "style": style_loss.mean(), "style_per_sample": style_loss, "tv": tv}


def random_flow(batch: int, height: int, width: int, max_shift: float,
                generator: torch.Generator) -> torch.Tensor:
    """Smooth random optical flow in pixels, (N, 2, H, W): global shift plus a 4x4 field."""
    shift = (torch.rand(batch, 2, 1, 1, generator=generator) * 2 - 1) * max_shift
    field = torch.randn(batch, 2, 4, 4, generator=generator) * (max_shift / 2)
    local = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)
    return shift + local


def warp(images: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp ``images`` by ``flow`` (pixels); also returns the in-frame mask (N,1,H,W).

    Computed in fp32: a bf16 sampling grid would be off by up to half a pixel at 256 px.
    """
    images = images.float()
    h, w = images.shape[-2:]
    ys = torch.linspace(-1, 1, h, device=images.device)
    xs = torch.linspace(-1, 1, w, device=images.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=images.device)
    grid = base + flow.permute(0, 2, 3, 1) * scale
    with torch.autocast(images.device.type, enabled=False):
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=True)
    inside = (grid.abs() <= 1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    return warped, inside.float()
