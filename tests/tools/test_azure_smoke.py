"""``make azure-smoke`` (``python -m tools.azure_smoke``), offline: the shared Azure ML fake runs
the real node script under ``mpiexec``; the jobs datastore and the output container are
Azurite's."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from tasks.compute.azureml import client as clients
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.settings import REPO_ROOT
from tests.azurite import blob_service, container, needs_azurite  # noqa: F401 - fixtures
from tests.fakes.azureml import DATASTORE, CommandNode, FakeMLClient, Script
from tools.azure_smoke import main


def test_make_azure_smoke_runs_this_tool() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^azure-smoke:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe and recipe.group(1).strip() == "$(BIN)/python -m tools.azure_smoke"


def test_an_unconfigured_workspace_fails_before_submitting_saying_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in os.environ:
        if name.startswith("RESTYLE_"):
            monkeypatch.delenv(name)

    status = main(["--scale-wait-minutes", "0"])

    out = capsys.readouterr().out
    assert status == 2
    assert out.startswith("FAIL  configuration: Azure ML backend is not configured: set ")
    assert "RESTYLE_AZUREML__SUBSCRIPTION_ID" in out and "RESTYLE_AZUREML__WORKSPACE" in out


@needs_azurite
@pytest.mark.slow
def test_the_tool_runs_the_node_script_and_reports_each_check(
    tmp_path: Path, container: ContainerClient, blob_service: BlobServiceClient,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outputs = blob_service.get_container_client(f"{container.container_name}-out")
    outputs.create_container()
    account = blob_service.credential.account_key
    env = {
        "RESTYLE_WORK_DIR": str(tmp_path / "work"),
        "RESTYLE_STORAGE__CONNECTION_STRING": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={account};BlobEndpoint={blob_service.url.rstrip('/')};"),
        "RESTYLE_STORAGE__OUTPUT_CONTAINER": outputs.container_name,
        "RESTYLE_AZUREML__SUBSCRIPTION_ID": "sub",
        "RESTYLE_AZUREML__RESOURCE_GROUP": "rg",
        "RESTYLE_AZUREML__WORKSPACE": "ws",
        "RESTYLE_AZUREML__DATA_DATASTORE": DATASTORE,
        "RESTYLE_AZUREML__DATA_ACCOUNT_URL": "https://restyledata.blob.core.windows.net",
        "RESTYLE_AZUREML__GPUS_PER_NODE": "2",
        "RESTYLE_AZUREML__POLL_SECONDS": "0.2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # This machine has no GPU, and the node runs the check as it is: CUDA must fail, for real.
    node = CommandNode(container, tmp_path_factory.mktemp("nodes"), cpu_for_gpu=False)
    fake = FakeMLClient(container, [Script("complete")], node)
    monkeypatch.setattr(clients, "make_credential", lambda settings: object())
    monkeypatch.setattr(clients, "make_ml_client", lambda settings, credential: fake)
    monkeypatch.setattr(BlobJobStorage, "from_settings",
                        classmethod(lambda cls, settings, credential: cls(container)))

    status = main(["--scale-wait-minutes", "0"])

    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines() if line[:4] in
             ("PASS", "FAIL", "SKIP")}
    assert status == 1, out
    assert lines["PASS  image builds and pulls"]
    assert "rank 1 on" in lines["FAIL  CUDA on every rank"]
    assert "rank 0 on" in lines["FAIL  CUDA on every rank"] and "a CPU-only build" in out
    assert "2 rank(s) on Open MPI v5" in lines["PASS  mpi4py allgather across the ranks"]
    assert lines["PASS  job identity reads and writes the jobs datastore"]
    assert lines["PASS  worker writes, tags and deletes blobs"]
    assert lines["SKIP  cluster scales back to zero"]
    (job,) = fake.jobs.submitted
    assert job.ranks == 2 and "--device cuda" in job.command and job.returncode == 3
    assert [p.name for p in job.code_dir.iterdir()] == ["smoke_node.py"]
    assert not list(container.list_blobs()) and not list(outputs.list_blobs())  # nothing left
