"""The train-style flow: its pure parts, then end to end through the stack's automation.

The stack tests upload to ``styles/`` and wait for what the watcher, the trigger and the worker
make of it. Training is tiny (3 steps, 32 px crops, a width-8 StyleNet, 2 content images): the
fixture :func:`tiny_training` puts those settings into the ``train-style/default`` deployment's
``env`` job variable, which the process worker adds to the flow run's environment, the same knob
an operator turns to tune a deployment; the stack itself keeps its GPU-sized defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from gpu import train
from gpu.model import load_style_model, read_metadata
from gpu.train_data import ImageError
from tasks import targets
from tasks.naming import BlobNameError
from tasks.settings import RestyleSettings, TrainingSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError
from tasks.styles import ShippedStyleError, UnknownStyleError, check_trainable_name
from tasks.targets import plan_training
from tasks.training import (
    metrics_rows,
    prepare_training_input,
    read_training_output,
    style_image_size,
    training_args,
    with_style_choices,
)
from tests.conftest import wait_for_blob
from tests.stack_api import api, wait_for_final_run

RUN_TIMEOUT = 300
TINY_HPARAMS = {"width": 8, "blocks": 1, "head_width": 8}


def make_style_png(path: Path, width: int, height: int) -> Path:
    """Seeded coloured stripes: a real image with structure for the Gram losses."""
    image = np.zeros((height, width, 3), np.uint8)
    image[::6] = (230, 40, 20)
    image[:, ::9, 2] = 220
    image[..., 1] = np.random.default_rng(0).integers(0, 80, (height, width), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


# --- pure parts -----------------------------------------------------------------------------


@pytest.fixture
def settings() -> RestyleSettings:
    return RestyleSettings()


def test_plan_training_names_the_style_after_the_image(settings: RestyleSettings) -> None:
    target = plan_training("styles/the_wave.JPG", None, settings)
    assert (target.source.container, target.source.blob, target.name) == (
        "styles", "the_wave.JPG", "the_wave")
    assert target.source.label == "styles/the_wave.JPG"
    assert (target.weights.label, target.error.label) == (
        "models/the_wave.safetensors", "models/the_wave.error.json")
    assert plan_training("sub/wave.png", "hokusai", settings).name == "hokusai"


@pytest.mark.parametrize(
    ("blob", "name", "error", "message"),
    [
        ("notes.txt", None, ImageError, "must be a .jpg/.jpeg/.png/.webp file"),
        ("Starry Night.png", None, UnknownStyleError, "use lower-case letters"),
        ("wave.png", "Wave!", UnknownStyleError, "not valid"),
        ("a/../../etc/x.png", None, BlobNameError, "not canonical"),
        ("", None, BlobNameError, "empty"),
        ("a\nforged.png", None, BlobNameError, "control characters"),
    ],
)
def test_plan_training_rejects_bad_blobs_and_names(
    settings: RestyleSettings, blob: str, name: str | None, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        plan_training(blob, name, settings)


def test_shipped_styles_cannot_be_overwritten(
    settings: RestyleSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ShippedStyleError, match="'udnie' is a shipped style"):
        check_trainable_name("udnie", ["starry_night", "udnie"])
    assert check_trainable_name("mine", ["udnie"]) == "mine"
    monkeypatch.setattr(targets, "shipped_style_names", lambda: ["udnie"])
    with pytest.raises(ShippedStyleError):
        plan_training("udnie.png", None, settings)


def test_training_args_carry_the_settings() -> None:
    training = TrainingSettings(steps=40, image_size=32, model_hparams=TINY_HPARAMS)
    args = training_args(training, "wave", "cpu")
    assert args == (
        "--style-name", "wave", "--steps", "40", "--batch-size", "16", "--image-size", "32",
        "--content-size", "320", "--style-size", "512", "--arch", "stylenet",
        "--model-hparams", json.dumps(TINY_HPARAMS), "--style-weight", "5.0",
        "--structure-weight", "2.0", "--conditioned",
        "--device", "cpu",
    )
    head = TrainingSettings(model_hparams={"head": "full_res"}, style_weight=2)
    args = training_args(head, "wave", "cpu")
    assert json.loads(args[args.index("--model-hparams") + 1]) == {"head": "full_res"}
    assert args[args.index("--style-weight") + 1] == "2.0"
    overridden = training_args(training.model_copy(update={"max_seconds": 60.0}), "w", "cuda", 7)
    assert overridden[overridden.index("--steps") + 1] == "7"
    assert overridden[-2:] == ("--max-seconds", "60.0")
    with pytest.raises(ValueError, match="at least 1"):
        training_args(training, "w", "cpu", 0)


def test_new_styles_are_strength_conditioned_unless_turned_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = training_args(TrainingSettings(default_strength=0.4), "wave", "cpu")
    at = chosen.index("--conditioned")
    assert chosen[at + 1:at + 3] == ("--default-strength", "0.4")
    monkeypatch.setenv("RESTYLE_TRAINING__CONDITIONED", "false")
    plain = training_args(RestyleSettings().training, "wave", "cpu")
    assert "--conditioned" not in plain and "--default-strength" not in plain


@pytest.mark.parametrize(("fields", "message"), [
    ({"arch": "johnson"}, "conditioned needs arch 'stylenet'"),
    ({"conditioned": False, "default_strength": 0.5}, "applies to conditioned networks only"),
    ({"default_strength": 1.5}, "less than or equal to 1"),
])
def test_training_settings_refuse_what_cannot_train(fields: dict[str, Any], message: str
                                                    ) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingSettings(**fields)
    assert TrainingSettings(arch="johnson", conditioned=False).arch == "johnson"


def test_the_flow_arguments_train_a_style_with_the_strength_control(tmp_path: Path) -> None:
    """gpu.train run on the flow's own input folder and arguments, on the CPU."""
    content = tmp_path / "content"
    content.mkdir()
    for i in range(2):
        make_style_png(content / f"{i}.png", 64, 64)
    job_in, job_out = tmp_path / "in", tmp_path / "out"
    prepare_training_input.fn(make_style_png(tmp_path / "wave.png", 96, 96), content, job_in)
    training = TrainingSettings(steps=2, batch_size=2, image_size=32, content_size=48,
                                style_size=64, model_hparams=TINY_HPARAMS)
    argv = ["--input", str(job_in), "--output", str(job_out),
            *training_args(training, "wave", "cpu")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions only slow down when threads compete
    try:
        metrics = train.main(train.get_args_parser().parse_args(argv))
    finally:
        torch.set_num_threads(threads)
    weights, _ = read_training_output(job_out)
    metadata = read_metadata(weights)
    assert json.loads(metadata["hparams"])["conditioned"] is True
    assert float(metadata["default_strength"]) == metrics["default_strength"] == 0.5
    model = load_style_model(weights)
    assert model.default_strength == 0.5
    model.set_strength(0.25)  # an unconditioned network would refuse any strength but 1
    rows = {row["item"]: row["value"] for row in metrics_rows(
        "wave", "styles/wave.png", "models/wave.safetensors", metrics, {})}
    assert rows["default strength"] == 0.5


def test_with_style_choices_appends_only_missing_names() -> None:
    schema = {"properties": {"style": {"type": "string", "enum": ["auto", "udnie"]}}}
    updated = with_style_choices(schema, ["udnie", "mine", "wave"])
    assert updated is not None
    assert updated["properties"]["style"]["enum"] == ["auto", "udnie", "mine", "wave"]
    assert schema["properties"]["style"]["enum"] == ["auto", "udnie"]  # input left as read
    assert with_style_choices(updated, ["mine"]) is None
    assert with_style_choices({"properties": {"style": {"type": "string"}}}, ["x"]) is None


def test_style_image_checks_name_the_blob(tmp_path: Path) -> None:
    assert style_image_size(make_style_png(tmp_path / "ok.png", 96, 72), "styles/ok.png") == (
        96, 72)
    text = tmp_path / "notes.png"
    text.write_text("meeting notes, not a painting\n")
    tiny = make_style_png(tmp_path / "tiny.png", 20, 20)
    huge = tmp_path / "huge.png"
    Image.new("1", (6400, 6400)).save(huge)  # 41 MP, a few kB on disk
    cases = [(text, "not a readable image"), (tiny, "at least 64 px"), (huge, "limit is 40 MP")]
    for path, message in cases:
        with pytest.raises(ImageError, match=message) as caught:
            style_image_size(path, f"styles/{path.name}")
        assert str(caught.value).startswith(f"styles/{path.name}: ")
        assert str(tmp_path) not in str(caught.value)


def test_prepare_training_input_lays_out_the_job_folder(tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    for i in range(2):
        make_style_png(content / f"{i}.png", 64, 64)
    (content / "SOURCES.json").write_text("{}")
    style = make_style_png(tmp_path / "wave.PNG", 96, 96)
    job_in = tmp_path / "job-in"
    assert prepare_training_input.fn(style, content, job_in) == 2
    assert sorted(p.name for p in job_in.iterdir()) == ["content", "style.png"]
    assert sorted(p.name for p in (job_in / "content").iterdir()) == ["0.png", "1.png"]

    with pytest.raises(FileNotFoundError, match="tools/assemble_content.py"):
        prepare_training_input.fn(style, tmp_path / "missing", job_in)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no content images"):
        prepare_training_input.fn(style, tmp_path / "empty", job_in)


# --- through the stack ----------------------------------------------------------------------


def wait_for_terminal_run(style_image: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """The train-style run of ``styles/<style_image>`` (the trigger names the container)."""
    return wait_for_final_run("style_image", f"styles/{style_image}", timeout)


@pytest.fixture(scope="module")
def tiny_training(
    stack_settings: RestyleSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Tiny training settings in the train-style deployment's job environment, then restored."""
    content = tmp_path_factory.mktemp("train-content")
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 6, 6, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic")
    for i, image in enumerate((smooth.clamp(0, 1) * 255).round().to(torch.uint8)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(content / f"{i}.png")
    env = {
        "RESTYLE_TRAINING__CONTENT_DIR": str(content),
        "RESTYLE_TRAINING__STEPS": "3",
        "RESTYLE_TRAINING__BATCH_SIZE": "2",
        "RESTYLE_TRAINING__IMAGE_SIZE": "32",
        "RESTYLE_TRAINING__CONTENT_SIZE": "48",
        "RESTYLE_TRAINING__STYLE_SIZE": "64",
        "RESTYLE_TRAINING__MODEL_HPARAMS": json.dumps(TINY_HPARAMS),
        "RESTYLE_COMPUTE__RANKS": "1",
        "RESTYLE_COMPUTE__DEVICE": "cpu",
    }
    deployment = api("GET", "/deployments/name/train-style/default")
    original = deployment["job_variables"]
    api("PATCH", f"/deployments/{deployment['id']}",
        {"job_variables": {**original, "env": {**original.get("env", {}), **env}}})
    yield
    api("PATCH", f"/deployments/{deployment['id']}", {"job_variables": original})


@pytest.mark.stack
def test_style_upload_trains_and_registers_a_style(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, tiny_training: None,
    unique: str, tmp_path: Path,
) -> None:
    name = f"trained-{unique}"
    storage = stack_settings.storage
    styles, models = storage.styles_container, storage.models_container
    stack_store.upload_file(styles, f"{name}.png", make_style_png(tmp_path / "s.png", 96, 96))

    run = wait_for_terminal_run(f"{name}.png")
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["name"] == f"{name}.png"  # the run is named after the image

    weights = tmp_path / "model.safetensors"
    stack_store.download(models, f"{name}.safetensors", weights)
    model = load_style_model(weights)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    metadata = read_metadata(weights)
    assert metadata["style"] == name
    assert json.loads(metadata["hparams"]) == {**TINY_HPARAMS, "head": "subpixel",
                                               "conditioned": True}
    assert json.loads(metadata["training"])["steps"] == 3
    assert model.default_strength == 0.5  # what the GPU job paints at when no strength is given

    info_path = tmp_path / "info.json"
    stack_store.download(models, f"{name}.json", info_path)
    info = json.loads(info_path.read_text())
    assert info["style_image"] == f"{styles}/{name}.png"
    assert info["metrics"]["steps"] == 3 and info["content_images"] == 2
    assert info["flow_run_id"] == run["id"]
    assert info["default_strength"] == 0.5

    stylize = api("GET", "/deployments/name/stylize-video/default")
    assert name in stylize["parameter_openapi_schema"]["properties"]["style"]["enum"]
    # The server enforces that schema: a run choosing the new style is now accepted. Scheduled
    # far ahead and deleted at once, so no worker runs it.
    later = {"type": "SCHEDULED", "state_details": {"scheduled_time": "2100-01-01T00:00:00Z"}}
    created = api("POST", f"/deployments/{stylize['id']}/create_flow_run",
                  {"parameters": {"video": "clip.mp4", "style": name}, "state": later})
    api("DELETE", f"/flow_runs/{created['id']}")

    artifacts = api("POST", "/artifacts/filter",
                    {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    table = next(a for a in artifacts if a["type"] == "table")
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    items = {row["item"]: row["value"] for row in rows}
    assert items["style"] == name and items["steps"] == 3 and items["default strength"] == 0.5
    assert {"content loss", "style loss", "total loss"} <= items.keys()


@pytest.mark.stack
def test_bad_style_images_get_error_reports_and_failed_runs(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, tiny_training: None,
    unique: str, tmp_path: Path,
) -> None:
    storage = stack_settings.storage
    styles, models = storage.styles_container, storage.models_container
    text = tmp_path / "notes.png"
    text.write_text("these are meeting notes, not a painting\n" * 20)
    bad = {
        f"notes-{unique}": (text, "not a readable image"),
        f"tiny-{unique}": (make_style_png(tmp_path / "tiny.png", 20, 20), "at least 64 px"),
    }
    for name, (path, _) in bad.items():  # both at once: the work pool runs two flows in parallel
        stack_store.upload_file(styles, f"{name}.png", path)

    for name, (_, message) in bad.items():
        wait_for_blob(stack_store, models, f"{name}.error.json", RUN_TIMEOUT)
        report_path = tmp_path / f"{name}.error.json"
        stack_store.download(models, f"{name}.error.json", report_path)
        report = json.loads(report_path.read_text())
        assert report["reason"].startswith(f"ImageError: {styles}/{name}.png: ")
        assert message in report["reason"]
        assert report["flow_run_id"] and report["time"]
        run = wait_for_terminal_run(f"{name}.png")
        assert run["state_type"] == "FAILED"
        assert message in run["state"]["message"]
        assert stack_store.get_tags(styles, f"{name}.png") == {"restyle-status": "failed"}
        with pytest.raises(BlobNotFoundError):
            stack_store.get_version(models, f"{name}.safetensors")
