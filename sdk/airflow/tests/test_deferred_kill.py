"""A deferred task's run, watched by a real `airflow triggerer` process: a user's kill of the
task (mark failed) cancels the run, while a triggerer that stops leaves it running.

Airflow does not call a deferred task's `on_kill` (apache/airflow#36090). Before 3.3 the
trigger tells the two cases apart by the task instance's state when it is cancelled; from 3.3
the triggerer calls the trigger's `on_kill()` for a user's action only. Both are tested here
through the triggerer of the installed Airflow.

The tasks are put in the deferred state the way Airflow's defer does it (a trigger row from
`JobdockRunTrigger.serialize()`, the task instance `deferred` pointing at it), after the
operator's own trigger call, so that no scheduler or worker is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from dags import load_dag, write_dag
from jobdock_airflow.compat import AIRFLOW_V_3_0_PLUS
from jobdock_airflow.hooks import JobdockHook
from jobdock_airflow.idempotency import idempotency_key
from jobdock_airflow.triggers import JobdockRunTrigger
from test_kill import AIRFLOW, stop_group, wait_for_run_status


def defer(dag_run, task_id: str, trigger: JobdockRunTrigger) -> None:
    """What Airflow's defer does to a task instance: a trigger row, the state `deferred`."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        row = Trigger.from_object(trigger)
        session.add(row)
        session.flush()
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=-1)
            .one()
        )
        ti.state = TaskInstanceState.DEFERRED
        ti.trigger_id = row.id
        ti.next_method = "execute_complete"
        ti.next_kwargs = {}
        ti.trigger_timeout = None


def mark_failed(dag_run, task_id: str) -> None:
    """A user's "mark failed" of the deferred task instance."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=-1)
            .one()
        )
        ti.set_state(TaskInstanceState.FAILED, session=session)


def trigger_logs_mention(text: str) -> bool:
    """Whether the triggerer's log files (per task, under AIRFLOW_HOME/logs) hold `text`."""
    for path in Path(os.environ["AIRFLOW_HOME"], "logs").rglob("*trigger*"):
        if path.is_file() and text in path.read_text(errors="replace"):
            return True
    return False


def stop_gracefully(triggerer: subprocess.Popen, output: Path) -> None:
    """SIGTERM to the triggerer's process group, sent again after 20 s: Airflow 2.10's
    triggerer sometimes loses the first (its handler's SystemExit is swallowed when the
    signal lands in a weakref callback), as a process manager would find."""
    for wait in (20, 60):
        os.killpg(triggerer.pid, signal.SIGTERM)
        try:
            triggerer.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass
    raise AssertionError(f"the triggerer did not stop:\n{output.read_text()[-5000:]}")


def timeline(jd, run_id: str) -> str:
    """The run's events (queued, started, cancel_requested, ...) as JSON text."""
    status, _, body = jd.request("GET", f"/api/v1/runs/{run_id}/events?limit=500")
    assert status == 200, body
    return json.dumps(body["items"])


def wait_until(condition, what: str, timeout: float, output: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; triggerer output:\n{output.read_text()[-5000:]}")
        time.sleep(0.5)


def test_a_user_kill_cancels_a_deferred_run_and_a_triggerer_stop_does_not(jd, make_job, tmp_path: Path) -> None:
    jobs = {"killed": make_job("echo waiting; sleep 300"), "kept": make_job("echo waiting; sleep 300")}
    dag_id = f"deferred_{uuid.uuid4().hex[:8]}"
    tasks = "\n".join(
        f"JobdockRunJobOperator(task_id={task!r}, job={job!r}, deferrable=True)" for task, job in jobs.items()
    )
    dag_run = load_dag(write_dag(dag_id, tasks)).test(mark_success_pattern=".*")  # the run and its rows
    hook = JobdockHook()
    runs = {}
    for task, job in jobs.items():
        key = idempotency_key(dag_id, task, dag_run.run_id, -1, 1)
        runs[task] = hook.trigger_run(job, idempotency_key=key)["id"]
        defer(dag_run, task, JobdockRunTrigger(run_id=runs[task], poll_interval=1))

    output = tmp_path / "triggerer.log"
    with open(output, "wb") as out:
        triggerer = subprocess.Popen(
            [AIRFLOW, "triggerer", "--skip-serve-logs"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        for task, job in jobs.items():
            wait_for_run_status(jd, job, "running")
            wait_until(
                lambda task=task: trigger_logs_mention(f"Jobdock run {runs[task]} is running"),
                f"the triggerer did not watch run {runs[task]}",
                90,
                output,
            )
        # A user's kill: the task leaves `deferred`, its trigger is removed and cancelled.
        mark_failed(dag_run, "killed")
        assert jd.wait_final(runs["killed"], timeout=90)["status"] == "cancelled", output.read_text()[-5000:]
        # A triggerer that stops (a restart, a deploy): the task stays deferred, the run goes on.
        stop_gracefully(triggerer, output)
        time.sleep(3)
        status, _, kept = jd.request("GET", f"/api/v1/runs/{runs['kept']}")
        assert status == 200 and kept["status"] == "running", kept
        assert "cancel_requested" not in timeline(jd, runs["kept"])
        assert "cancel_requested" in timeline(jd, runs["killed"])  # what the line above looks for
    finally:
        stop_group(triggerer)
        with contextlib.suppress(Exception):
            hook.cancel_run(runs["kept"])
    assert trigger_logs_mention(f"The task was killed: cancelling Jobdock run {runs['killed']}")
    assert not trigger_logs_mention(f"cancelling Jobdock run {runs['kept']}")
    if not AIRFLOW_V_3_0_PLUS:  # the trigger did look, and found its task still deferred
        # (Airflow 3's triggerer stops writing a trigger's log when it stops, so only here.)
        assert trigger_logs_mention("Task instance state is deferred while the trigger is cancelled")
