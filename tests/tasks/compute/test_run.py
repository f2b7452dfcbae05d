"""Choosing the backend, the flows' cancel hook, and the settings that reach the GPU job."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.compute.azureml import client as clients
from tasks.compute.azureml.backend import AzureMLBackend, cancel_flow_run_jobs
from tasks.compute.azureml.spec import JobPaths, build_command_job
from tasks.compute.base import GpuJob
from tasks.compute.local import LocalMpiBackend
from tasks.compute.run import cancel_gpu_jobs, get_backend
from tasks.settings import AzureMLSettings, ComputeSettings, RestyleSettings
from tests.fakes.azureml import FakeMLClient, Script
from tests.tasks.test_storage_links import _EntraToken


def test_every_gpu_job_knob_reaches_the_job_and_defaults_stay_the_jobs() -> None:
    assert ComputeSettings().stylize_args() == ("--device", "auto", "--compile", "auto")
    tuned = ComputeSettings(device="cuda", compile="reduce-overhead", batch_size=8, encoders=3,
                            encoder_threads=4, threads=6, max_waiting_batches=2)
    assert tuned.stylize_args() == (
        "--device", "cuda", "--compile", "reduce-overhead", "--batch-size", "8",
        "--encoders", "3", "--encoder-threads", "4", "--threads", "6",
        "--max-waiting-batches", "2",
    )


def test_the_knobs_are_the_jobs_own_options() -> None:
    from gpu.stylize import get_args_parser

    options = {opt for action in get_args_parser()._actions for opt in action.option_strings}
    args = ComputeSettings(batch_size=1, encoders=1, encoder_threads=1, threads=1,
                           max_waiting_batches=1).stylize_args()
    assert {arg for arg in args if arg.startswith("--")} <= options


@pytest.mark.parametrize("model", [ComputeSettings, AzureMLSettings])
def test_every_setting_is_described(model: type) -> None:
    for name, info in model.model_fields.items():
        assert info.description and len(info.description) > 15, name


def test_settings_choose_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(get_backend(RestyleSettings(work_dir=tmp_path)), LocalMpiBackend)
    fake = FakeMLClient(None, [])  # type: ignore[arg-type]
    monkeypatch.setattr(clients, "make_credential", lambda settings: _EntraToken())
    monkeypatch.setattr(clients, "make_ml_client", lambda settings, credential: fake)
    settings = RestyleSettings(
        work_dir=tmp_path, compute={"backend": "azureml"},
        azureml={"data_account_url": "https://restyledata.blob.core.windows.net"},
    )
    backend = get_backend(settings)
    assert isinstance(backend, AzureMLBackend) and backend.ml_client is fake
    # The job folders authenticate as the same identity as the workspace client.
    assert isinstance(backend.storage.container.credential, _EntraToken)


def submit(fake: FakeMLClient, tmp_path: Path, flow_run_id: str, name: str) -> None:
    settings = AzureMLSettings()
    job = GpuJob("gpu.stylize", tmp_path, tmp_path / "out", flow_run_id=flow_run_id)
    spec = build_command_job(job, settings, paths=JobPaths.for_job(settings, "k"),
                             job_name=name, code_dir=tmp_path, environment="azureml:env:1")
    fake.jobs.create_or_update(spec)


@pytest.fixture
def workspace(tmp_path: Path) -> FakeMLClient:
    """Jobs of two flow runs: run-a has one running and one finished, run-b one running."""
    fake = FakeMLClient(None, [Script("hang"), Script("complete"), Script("hang")])  # type: ignore[arg-type]
    submit(fake, tmp_path, "run-a", "a-running")
    submit(fake, tmp_path, "run-a", "a-finished")
    submit(fake, tmp_path, "run-b", "b-running")
    fake.jobs.find("a-running").status = "Running"
    fake.jobs.find("a-finished").status = "Completed"
    fake.jobs.find("b-running").status = "Queued"
    return fake


def test_cancel_flow_run_jobs_cancels_only_that_runs_unfinished_jobs(
    workspace: FakeMLClient,
) -> None:
    names = cancel_flow_run_jobs(workspace, "run-a", logging.getLogger("test"))
    assert names == ["a-running"] and workspace.jobs.cancelled == ["a-running"]
    assert workspace.jobs.find("b-running").status == "Queued"


def test_the_flow_hook_cancels_the_runs_azure_ml_jobs(
    workspace: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTYLE_COMPUTE__BACKEND", "azureml")
    monkeypatch.setattr(clients, "make_credential", lambda settings: object())
    monkeypatch.setattr(clients, "make_ml_client", lambda settings, credential: workspace)

    cancel_gpu_jobs(None, SimpleNamespace(id="run-b"), SimpleNamespace(name="Crashed"))

    assert workspace.jobs.cancelled == ["b-running"]


def test_the_flow_hook_does_nothing_locally_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(settings: object) -> object:
        raise RuntimeError("no Azure from here")

    monkeypatch.setattr(clients, "make_credential", unreachable)
    monkeypatch.setenv("RESTYLE_COMPUTE__BACKEND", "local")
    cancel_gpu_jobs(None, SimpleNamespace(id="run-a"), SimpleNamespace(name="Cancelled"))
    assert "could not cancel" not in caplog.text

    monkeypatch.setenv("RESTYLE_COMPUTE__BACKEND", "azureml")
    cancel_gpu_jobs(None, SimpleNamespace(id="run-a"), SimpleNamespace(name="Cancelled"))
    assert "could not cancel the GPU jobs of flow run run-a" in caplog.text
    assert "no Azure from here" in caplog.text


def test_painting_controls_reach_the_job_and_keep_their_bounds() -> None:
    plain = ComputeSettings()
    assert plain.with_controls().stylize_args() == plain.stylize_args()
    tuned = plain.with_controls(strength=0.3, stroke_scale=2.0, preserve_colors=True)
    assert tuned.stylize_args()[-5:] == ("--strength", "0.3", "--stroke-scale", "2.0",
                                         "--preserve-colors")
    assert ComputeSettings(strength=0.6).with_controls(stroke_scale=0.5).strength == 0.6
    for bad in ({"strength": 1.5}, {"strength": -0.1}, {"stroke_scale": 5.0}):
        with pytest.raises(ValueError, match="less than or equal|greater than or equal"):
            plain.with_controls(**bad)


def test_the_flow_refuses_out_of_range_controls_before_running() -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.stylize import stylize_video

    with pytest.raises(ParameterTypeError, match="strength"):
        stylize_video.validate_parameters({"video": "a.mp4", "strength": 2.0})
    with pytest.raises(ParameterTypeError, match="stroke_scale"):
        stylize_video.validate_parameters({"video": "a.mp4", "stroke_scale": 0.1})
    accepted = stylize_video.validate_parameters({"video": "a.mp4", "strength": 0.4})
    assert accepted["strength"] == 0.4
