"""The painting controls of the GPU job (issue 17): strength, stroke scale and original colours,
run for real on the CPU with a tiny strength-conditioned network."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gpu import jobdir
from gpu.ffmpeg import run_ffmpeg
from gpu.jobdir import EncodeSettings, InputFormat, JobManifest
from gpu.model import build_model, load_style_model, save_weights
from gpu.stylize.cli import check_args, get_args_parser
from gpu.stylize.colour import raw_to_rgb, rgb_to_yuv420
from gpu.stylize.errors import INPUT_ERROR_EXIT_CODE, JobInputError
from gpu.stylize.frames import FrameLayout
from gpu.stylize.stylizer import PaintControls, Stylizer
from gpu.video_io import decode_argv, yuv420_frame_bytes
from tests.stylize_jobs import FFMPEG, launch, make_job, ok

WIDTH, HEIGHT = 66, 50
LUMA = WIDTH * HEIGHT
DEFAULT_STRENGTH = 0.75
SOFT_COLOURS = "hue=s=0.4,eq=contrast=0.6"
"""Keeps the test pattern's colours off the RGB cube's faces, so that the source's colours under
the painting's luminance need no clipping and keep their chroma exactly."""


@pytest.fixture(scope="module")
def conditioned_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("stylenet", conditioned=True, width=8, blocks=1, head_width=8).eval()
    with torch.no_grad():  # a trained embedding is not zero: make strengths paint differently
        model.strength_embedding.mlp[-1].weight.normal_(0, 2.0)
    model.default_strength = DEFAULT_STRENGTH
    path = tmp_path_factory.mktemp("conditioned") / "model.safetensors"
    save_weights(model, path)
    return path


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory,
        conditioned_model: Path) -> tuple[Path, JobManifest]:
    folder = tmp_path_factory.mktemp("controls_job")
    manifest = make_job(folder, WIDTH, HEIGHT, [4, 3], conditioned_model,
                        InputFormat("yuv420p", "bt709"), look=SOFT_COLOURS)
    # Nearly lossless x264, so the outputs compare with the device's YUV within rounding.
    manifest = replace(manifest, encode=EncodeSettings(crf=4, preset="ultrafast"))
    jobdir.write_manifest(folder, manifest)
    return folder, manifest


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, job: tuple[Path, JobManifest]
         ) -> dict[str, Path]:
    """The job at stroke scale 4 (180 working lines: the 50-line frame is painted as it is):
    once at strength 0.25, once at the model's default strength in the source's colours."""
    input_dir, _ = job
    outputs = {}
    for name, extra in {"strength": ["--strength", "0.25"],
                        "colours": ["--preserve-colors"]}.items():
        outputs[name] = tmp_path_factory.mktemp(name)
        ok(launch(input_dir, outputs[name], None, "--stroke-scale", "4", *extra))
    return outputs


def planes(path: Path) -> torch.Tensor:
    """A chunk's frames as yuv420p rows, (N, Y then U then V)."""
    data = np.frombuffer(run_ffmpeg(decode_argv(FFMPEG, path, "yuv420p")), np.uint8)
    return torch.from_numpy(data.reshape(-1, yuv420_frame_bytes(WIDTH, HEIGHT)).copy())


def painted(model_path: Path, manifest: JobManifest, frames: torch.Tensor, strength: float,
            paint: PaintControls) -> torch.Tensor:
    """What the job's device step makes of ``frames``, computed here."""
    model = load_style_model(model_path)
    model.set_strength(strength)
    out = torch.empty((len(frames), yuv420_frame_bytes(WIDTH, HEIGHT)), dtype=torch.uint8)
    Stylizer(model, torch.device("cpu"), FrameLayout.of(manifest), paint=paint)(
        frames, out, len(frames))
    return out


def as_output(manifest: JobManifest, frames: torch.Tensor) -> torch.Tensor:
    """The source frames through the job's colour path alone, unpainted."""
    rgb = raw_to_rgb(frames, FrameLayout.of(manifest))
    return rgb_to_yuv420(rgb.mul(255).round_().div_(255))


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.int() - b.int()).abs().float().mean().item()


def test_the_strength_argument_reaches_the_network(
    runs: dict[str, Path], job: tuple[Path, JobManifest], conditioned_model: Path
) -> None:
    input_dir, manifest = job
    assert jobdir.read_summary(runs["strength"]).strength == 0.25
    # Without --strength the model's own default, from its weights' metadata, paints.
    assert jobdir.read_summary(runs["colours"]).strength == DEFAULT_STRENGTH
    four = PaintControls(stroke_scale=4.0)
    for chunk in manifest.chunks:
        source = planes(input_dir / chunk.file)
        output = planes(jobdir.output_chunk_path(runs["strength"], chunk))
        assert gap(output, painted(conditioned_model, manifest, source, 0.25, four)) < 1.0
        assert gap(output, painted(conditioned_model, manifest, source, 0.75, four)) > 4.0


def test_a_frame_shorter_than_the_working_height_is_painted_at_its_own_size(
    runs: dict[str, Path], job: tuple[Path, JobManifest]
) -> None:
    _, manifest = job
    for output_dir in runs.values():
        summary = jobdir.read_summary(output_dir)
        assert (summary.stroke_scale, summary.working_width, summary.working_height) == \
            (4.0, WIDTH, HEIGHT)
        for chunk in manifest.chunks:
            path = jobdir.output_chunk_path(output_dir, chunk)
            probe = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)],
                                   capture_output=True, text=True).stderr
            assert f"{WIDTH}x{HEIGHT}" in probe, probe
            assert len(planes(path)) == chunk.frames


def test_preserved_colours_keep_the_sources_chroma_on_the_yuv_path(
    runs: dict[str, Path], job: tuple[Path, JobManifest], conditioned_model: Path
) -> None:
    input_dir, manifest = job
    assert jobdir.read_summary(runs["colours"]).preserve_colors
    assert not jobdir.read_summary(runs["strength"]).preserve_colors
    for chunk in manifest.chunks:
        source = planes(input_dir / chunk.file)
        unpainted = as_output(manifest, source)
        # On the device: the source's Cb and Cr within rounding, the painting's Y.
        kept = painted(conditioned_model, manifest, source, DEFAULT_STRENGTH,
                       PaintControls(4.0, preserve_colors=True))
        plain = painted(conditioned_model, manifest, source, DEFAULT_STRENGTH,
                        PaintControls(4.0))
        assert (kept[:, LUMA:].int() - unpainted[:, LUMA:].int()).abs().max() <= 1
        assert (kept[:, :LUMA].int() - plain[:, :LUMA].int()).abs().max() <= 1
        assert gap(kept[:, :LUMA], unpainted[:, :LUMA]) > 10  # it is painted all the same
        # Through the job and x264: the output's chroma is the source's, and without the
        # option it is not.
        output = planes(jobdir.output_chunk_path(runs["colours"], chunk))
        assert gap(output[:, LUMA:], unpainted[:, LUMA:]) < 1.0
        assert gap(output[:, :LUMA], plain[:, :LUMA]) < 1.0
        repainted = planes(jobdir.output_chunk_path(runs["strength"], chunk))
        assert gap(repainted[:, LUMA:], unpainted[:, LUMA:]) > 3.0


def test_a_network_as_large_as_the_frame_is_not_resized(
    conditioned_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At stroke scale 1 the network paints up to 720 lines: a 712x540 frame goes in as it is."""
    layout = FrameLayout(712, 540)
    frames = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, (1, layout.frame_bytes), dtype=np.uint8))
    out = torch.empty((1, yuv420_frame_bytes(712, 540)), dtype=torch.uint8)
    model = load_style_model(conditioned_model)
    resizes: list[tuple[int, ...]] = []
    interpolate = torch.nn.functional.interpolate

    def counted(frames: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        resizes.append(tuple(frames.shape[-2:]))
        return interpolate(frames, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", counted)
    stylizer = Stylizer(model, torch.device("cpu"), layout)
    assert stylizer.working_size == (540, 712)
    stylizer(frames, out, 1)
    assert resizes == []
    with torch.no_grad():
        direct = model(raw_to_rgb(frames, layout)).clamp(0, 1).mul(255).round().div(255)
    assert torch.equal(out, rgb_to_yuv420(direct))
    # At another stroke scale the frame is resized on the way in and on the way out.
    Stylizer(model, torch.device("cpu"), layout, paint=PaintControls(2.0))(frames, out, 1)
    assert resizes == [(540, 712), (360, 474)]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--strength", "-0.1", r"--strength: strength must be within \[0, 1\], got -0.1"),
    ("--strength", "1.5", r"--strength: strength must be within \[0, 1\], got 1.5"),
    ("--strength", "nan", r"--strength: strength must be within \[0, 1\], got nan"),
    ("--stroke-scale", "0.2", r"--stroke-scale: stroke scale must be within \[0.25, 4.0\]"),
    ("--stroke-scale", "4.5", r"--stroke-scale: stroke scale must be within \[0.25, 4.0\]"),
    ("--stroke-scale", "inf", r"--stroke-scale: stroke scale must be within"),
])
def test_controls_out_of_range_are_input_errors(option: str, value: str, message: str) -> None:
    args = get_args_parser().parse_args(["--input", "i", "--output", "o", option, value])
    with pytest.raises(JobInputError, match=message) as caught:
        check_args(args)
    assert caught.value.on_every_rank
    for bound in ("0", "1") if option == "--strength" else ("0.25", "4"):
        check_args(get_args_parser().parse_args(["--input", "i", "--output", "o",
                                                 option, bound]))


def test_the_job_ends_with_the_input_error_status_on_bad_controls(
    job: tuple[Path, JobManifest], tmp_path: Path, tiny_model_path: Path
) -> None:
    input_dir, _ = job
    proc = launch(input_dir, tmp_path / "out", None, "--stroke-scale", "5")
    assert proc.returncode == INPUT_ERROR_EXIT_CODE, proc.stderr
    assert "--stroke-scale: stroke scale must be within [0.25, 4.0], got 5.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A network trained before strength existed paints only at its own strength.
    proc = launch(input_dir, tmp_path / "out", None, "--strength", "0.5",
                  model=tiny_model_path)
    assert proc.returncode == INPUT_ERROR_EXIT_CODE, proc.stderr
    assert "--strength 0.5: this style network has no strength control" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / jobdir.SUMMARY_NAME).exists()
