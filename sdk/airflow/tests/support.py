"""Helpers of the provider's tests: connections in the environment, the engine's runs of a
job."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


def connection_json(url: str, token: str) -> str:
    """The `AIRFLOW_CONN_…` value of a jobdock connection (Airflow's JSON form)."""
    return json.dumps({"conn_type": "jobdock", "host": url, "password": token})


@contextlib.contextmanager
def connection_env(conn_id: str, url: str, token: str) -> Iterator[None]:
    """A jobdock connection `conn_id`, defined in the environment while the block runs."""
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[name] = connection_json(url, token)
    try:
        yield
    finally:
        os.environ.pop(name, None)


def runs_of(jd: Any, job: str) -> list[dict[str, Any]]:
    """The engine's runs of `job`, newest first."""
    status, _, body = jd.request("GET", f"/api/v1/runs?job={job}&limit=100")
    assert status == 200, body
    return body["items"]
