"""Strength-conditioned StyleNet: one network for every strength in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpu.losses import identity_share, style_weight_share
from gpu.model import (
    build_model,
    load_state_for_finetune,
    load_style_model,
    read_metadata,
    save_weights,
    write_default_strength,
)

TINY = {"width": 8, "blocks": 1, "head_width": 8}


def conditioned_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("stylenet", conditioned=True, **TINY).eval()
    with torch.no_grad():  # a trained embedding is not zero: make strengths differ
        model.strength_embedding.mlp[-1].weight.normal_(0, 0.5)
    return model


def test_set_strength_paints_as_the_per_sample_strength_does() -> None:
    model, x = conditioned_net(), torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        both = model(x, torch.tensor([0.1, 0.8]))
        model.set_strength(0.1)
        low = model(x)
        model.set_strength(0.8)
        high = model(x)
    assert torch.allclose(both[0], low[0], atol=1e-5)
    assert torch.allclose(both[1], high[1], atol=1e-5)
    assert (low - high).abs().max() > 1e-2


def test_the_same_strength_gives_the_same_output() -> None:
    model, x = conditioned_net(), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        model.set_strength(0.4)
        first = model(x)
        model.set_strength(0.9)
        model.set_strength(0.4)
        assert torch.equal(model(x), first)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_out_of_range_is_refused(strength: float) -> None:
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        conditioned_net().set_strength(strength)


def test_an_unconditioned_network_accepts_only_its_own_strength() -> None:
    model = build_model("stylenet", **TINY)
    model.set_strength(1.0)
    with pytest.raises(ValueError, match="no strength control"):
        model.set_strength(0.5)
    with pytest.raises(ValueError, match="no strength control"):
        model(torch.rand(1, 3, 8, 8), torch.tensor([0.5]))


def test_default_strength_round_trips_through_the_weights_file(tmp_path: Path) -> None:
    model = conditioned_net()
    model.default_strength = 0.55
    save_weights(model, tmp_path / "m.safetensors")
    loaded = load_style_model(tmp_path / "m.safetensors")
    assert loaded.default_strength == 0.55
    model.set_strength(0.55)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-3)  # fp16 weights on disk


def test_a_new_default_strength_is_written_without_touching_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(conditioned_net(), path, {"style": "tiny"})
    before = load_file(str(path))
    write_default_strength(path, 0.8)
    assert load_style_model(path).default_strength == 0.8
    assert read_metadata(path)["style"] == "tiny"
    assert all(torch.equal(before[k], v) for k, v in load_file(str(path)).items())
    with pytest.raises(ValueError, match="within"):
        write_default_strength(path, 1.5)
    fixed = tmp_path / "fixed.safetensors"
    save_weights(build_model("stylenet", **TINY), fixed)
    with pytest.raises(ValueError, match="strength 1 only"):
        write_default_strength(fixed, 0.5)


def test_finetune_from_unconditioned_weights_starts_out_identical(tmp_path: Path) -> None:
    torch.manual_seed(1)
    plain = build_model("stylenet", **TINY).eval()
    save_weights(plain, tmp_path / "plain.safetensors")
    conditioned = build_model("stylenet", conditioned=True, **TINY).eval()
    load_state_for_finetune(conditioned, tmp_path / "plain.safetensors")
    plain = load_style_model(tmp_path / "plain.safetensors")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = plain(x)
        assert torch.allclose(conditioned(x, torch.tensor([0.0, 1.0])), expected, atol=1e-6)


def test_finetune_refuses_weights_of_another_shape(tmp_path: Path) -> None:
    save_weights(build_model("stylenet", width=16, blocks=1, head_width=8),
                 tmp_path / "wide.safetensors")
    with pytest.raises((ValueError, RuntimeError)):
        load_state_for_finetune(build_model("stylenet", conditioned=True, **TINY),
                                tmp_path / "wide.safetensors")


def test_strength_shares_run_from_input_to_full_style() -> None:
    s = torch.tensor([0.0, 0.5, 1.0])
    share = style_weight_share(s)
    assert share[0] == 0 and torch.isclose(share[2], torch.tensor(1.0))
    assert 0 < share[1] < 0.5
    assert identity_share(s).tolist() == [1.0, 0.0625, 0.0]
