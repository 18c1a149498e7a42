"""Fixtures of the provider's tests: one live engine for the session (it runs real
containers), the `jobdock_default` connection pointing at it, and jobs with unique names.

Run through `sdk/airflow/tests/run`, which gives each Airflow line its own AIRFLOW_HOME with a
migrated sqlite database; the engine binary comes from JOBDOCK_BIN.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "support" / "python"))

from jobdock_live import Engine, busybox_image, engine  # noqa: E402
from support import connection_json  # noqa: E402

if "AIRFLOW_HOME" not in os.environ:
    raise RuntimeError("AIRFLOW_HOME is not set: run these tests through sdk/airflow/tests/run")


@pytest.fixture(scope="session")
def jd() -> Iterator[Engine]:
    """The engine, with `jobdock_default` pointing at it for the whole session."""
    image = busybox_image()
    with engine() as live:
        live.image = image  # type: ignore[attr-defined]
        os.environ["AIRFLOW_CONN_JOBDOCK_DEFAULT"] = connection_json(live.url, live.token)
        try:
            yield live
        finally:
            os.environ.pop("AIRFLOW_CONN_JOBDOCK_DEFAULT", None)


@pytest.fixture
def make_job(jd: Engine) -> Callable[..., str]:
    """Registers a job running `script` in busybox under a unique name; returns the name."""

    def make(script: str, **spec: Any) -> str:
        name = f"af-{uuid.uuid4().hex[:12]}"
        definition = {
            "name": name,
            "image": jd.image,  # type: ignore[attr-defined]
            "command": ["sh", "-c", script],
            "stop_grace_seconds": 1,
            **spec,
        }
        status, _, body = jd.request("POST", "/api/v1/jobs", definition)
        assert status == 201, body
        return name

    return make


@pytest.fixture
def task_log(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """What the test's DAG runs logged so far: Airflow 3 writes task logs to stdout through
    structlog, Airflow 2.10's dag.test() to stdout and to Python logging (the trigger's
    records only to the latter)."""
    caplog.set_level(logging.INFO)

    def read() -> str:
        return capfd.readouterr().out + "\n" + caplog.text

    return read
