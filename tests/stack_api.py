"""Helpers of the stack tests: the Prefect API, and waiting on a condition with a bound."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
T = TypeVar("T")


def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One Prefect API call, retried while the loaded test server answers 503 (SQLite busy)."""
    for attempt in range(5):
        response = httpx.request(method, f"{os.environ['PREFECT_API_URL']}{path}", json=body,
                                 timeout=10)
        if response.status_code != 503 or attempt == 4:
            break
        time.sleep(1 + attempt)
    response.raise_for_status()
    return response.json() if response.content else None


def wait_until(condition: Callable[[], T | None], timeout: float, what: str,
               poll: float = 1.0) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


def flow_runs(parameter: str, value: str) -> list[dict[str, Any]]:
    """Flow runs whose ``parameter`` is ``value``, newest first."""
    runs = api("POST", "/flow_runs/filter", {"limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    return [r for r in runs if r["parameters"].get(parameter) == value]


def wait_for_final_run(parameter: str, value: str, timeout: float) -> dict[str, Any]:
    """The newest run with ``parameter=value``, once it is in a final state."""
    def final() -> dict[str, Any] | None:
        runs = flow_runs(parameter, value)
        return runs[0] if runs and runs[0]["state_type"] in FINAL_STATES else None

    return wait_until(final, timeout, f"a finished run with {parameter}={value!r}")


def wait_for_state(run_id: str, states: set[str], timeout: float) -> dict[str, Any]:
    """Flow run ``run_id`` once its state type is one of ``states``."""
    return wait_until(
        lambda: (run := api("GET", f"/flow_runs/{run_id}"))["state_type"] in states and run,
        timeout, f"flow run {run_id} in {sorted(states)}")
