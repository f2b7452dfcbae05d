"""Shared fixtures: the local stack that `make test` starts, tiny seeded models."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gpu.model import build_model, save_weights
from tasks.settings import RestyleSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError, make_blob_store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the local stack is a stack test, marked or not, so the fast tier
    (`make test-fast`, ``-m "not stack"``) leaves it out."""
    for item in items:
        if "stack_settings" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StyleNet with fixed seeded weights: real code path, CPU-fast."""
    import torch

    torch.manual_seed(1234)
    model = build_model("stylenet", width=8, blocks=1, head_width=8)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_weights(model, path, {"style": "tiny"})
    return path


@pytest.fixture(scope="session")
def tiny_conditioned_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny strength-conditioned StyleNet whose file gives 0.45 as its default strength."""
    import torch

    torch.manual_seed(4321)
    model = build_model("stylenet", width=8, blocks=1, head_width=8, conditioned=True)
    model.default_strength = 0.45
    path = tmp_path_factory.mktemp("models") / "tiny-conditioned.safetensors"
    save_weights(model, path, {"style": "tiny-conditioned"})
    return path


def _stack_is_up() -> bool:
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return False
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def stack_settings() -> RestyleSettings:
    """Settings of the running local stack; skips when `make test` did not start one."""
    if not _stack_is_up():
        pytest.skip("needs the local stack: run through `make test` (tools/stack.sh up)")
    return RestyleSettings()


@pytest.fixture(scope="session")
def stack_store(stack_settings: RestyleSettings) -> AzureBlobStore:
    store = make_blob_store(stack_settings.storage)
    s = stack_settings.storage
    store.ensure_containers(
        [s.input_container, s.output_container, s.styles_container, s.models_container]
    )
    return store


@pytest.fixture(scope="session")
def registered_tiny_style(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, tiny_model_path: Path
) -> str:
    """Register the tiny model as a style in the models container, as train-style would."""
    name = "tiny-test"
    stack_store.upload_file(
        stack_settings.storage.models_container, f"{name}.safetensors", tiny_model_path
    )
    return name


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


def wait_for_blob(
    store: AzureBlobStore, container: str, blob: str, timeout: float,
    still_waiting: Callable[[], None] | None = None,
) -> None:
    """Poll until ``container/blob`` exists, or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store.get_version(container, blob)
            return
        except BlobNotFoundError:
            if still_waiting:
                still_waiting()
            time.sleep(1)
    pytest.fail(f"{container}/{blob} did not appear within {timeout:.0f}s")
