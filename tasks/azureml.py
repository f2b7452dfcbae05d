"""Moved to :mod:`tasks.compute.azureml`; this re-export only bridges the merge of tests that
import ``tasks.azureml``. Remove it once nothing does."""

from tasks.compute.azureml.backend import AzureMLBackend
from tasks.compute.azureml.folders import BlobJobStorage, JobFolderStorage
from tasks.compute.azureml.links import sign_blob_read_url, user_delegation_read_url
from tasks.compute.azureml.logs import is_preemption
from tasks.compute.azureml.redaction import redact
from tasks.compute.azureml.spec import (
    JobPaths,
    build_command_job,
    job_key,
    load_compute_spec,
    render_job_yaml,
    resolve_environment,
    stage_code,
)

__all__ = [
    "AzureMLBackend",
    "BlobJobStorage",
    "JobFolderStorage",
    "JobPaths",
    "build_command_job",
    "is_preemption",
    "job_key",
    "load_compute_spec",
    "redact",
    "render_job_yaml",
    "resolve_environment",
    "sign_blob_read_url",
    "stage_code",
    "user_delegation_read_url",
]
