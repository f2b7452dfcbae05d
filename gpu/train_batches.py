"""Training batches for ``gpu.train``: seeded per-step generators and random content crops.

Every draw of a step comes from generators reseeded with (seed, rank, step), so a resumed run
draws exactly what an uninterrupted one would, and ranks draw different crops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def step_generators(seed: int, rank: int, step: int, device: torch.device
                    ) -> tuple[torch.Generator, torch.Generator]:
    """CPU and device generators for one (seed, rank, step): resumable, rank-distinct draws."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint64)
    cpu = torch.Generator().manual_seed(int(state[0]) >> 1)
    on_device = torch.Generator(device=device).manual_seed(int(state[1]) >> 1)
    return cpu, on_device


def random_crops(content: torch.Tensor, batch: int, size: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """Random ``size`` crops with random horizontal flips, float (N, 3, size, size) in [0, 1]."""
    count, height, width = content.shape[:3]
    picks = torch.randint(count, (batch,), generator=generator).tolist()
    tops = torch.randint(height - size + 1, (batch,), generator=generator).tolist()
    lefts = torch.randint(width - size + 1, (batch,), generator=generator).tolist()
    flips = torch.rand(batch, generator=generator).lt(0.5).tolist()
    crops = []
    for pick, top, left, flip in zip(picks, tops, lefts, flips, strict=True):
        crop = content[pick, top:top + size, left:left + size]
        crops.append(crop.flip(1) if flip else crop)
    return torch.stack(crops).permute(0, 3, 1, 2).float().div_(255.0)


def fit_content(content: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale a content set whose images are smaller than the crop, keeping uint8 (N,H,W,3)."""
    height, width = content.shape[1:3]
    if min(height, width) >= size:
        return content
    scale = size / min(height, width)
    target = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = F.interpolate(content.permute(0, 3, 1, 2).float(), size=target, mode="bilinear",
                      align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
