"""A killed task cancels its Jobdock run: `airflow tasks test` in a process group of its own,
SIGTERM to that group once the run is running (as a worker's supervisor does), and the run
must end `cancelled`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from dags import write_dag
from support import runs_of

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def wait_for_run_status(jd, job: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = runs_of(jd, job)
        if runs and runs[0]["status"] == status:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"no run of {job} became {status} within {timeout} s: {runs_of(jd, job)}")


def stop_group(process: subprocess.Popen) -> None:
    """Kills what is left of the process group (by its id)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_killed_task_cancels_its_run(jd, make_job, tmp_path: Path) -> None:
    job = make_job("echo waiting; sleep 300")
    dag_id = f"killed_{uuid.uuid4().hex[:8]}"
    write_dag(dag_id, f"JobdockRunJobOperator(task_id='run', job={job!r}, poll_interval=2)")
    log_path = tmp_path / "task.log"
    with open(log_path, "wb") as log:
        task = subprocess.Popen(
            [AIRFLOW, "tasks", "test", dag_id, "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run = wait_for_run_status(jd, job, "running")
        os.killpg(task.pid, signal.SIGTERM)
        try:
            task.wait(timeout=90)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"the task did not end after SIGTERM:\n{log_path.read_text()[-4000:]}") from err
    finally:
        stop_group(task)
    output = log_path.read_text()
    assert jd.wait_final(run["id"], timeout=60)["status"] == "cancelled", output[-4000:]
    assert f"Cancelling Jobdock run {run['id']}" in output
    # Airflow 2 ends the task at the signal; Airflow 3 lets it see its run end cancelled.
    assert (
        "AirflowTaskTerminated: Task received SIGTERM signal" in output
        or f"Jobdock run {run['id']} of job {job} ended cancelled" in output
    ), output[-4000:]
    assert len(runs_of(jd, job)) == 1
    assert jd.token not in output
