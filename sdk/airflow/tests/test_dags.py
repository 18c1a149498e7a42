"""DAGs run with `dag.test()` against the live engine: the operator's outcome, XComs and task
log, deferrable mode, the timeout, idempotency across re-sent requests and Airflow retries,
and the sensor."""

from __future__ import annotations

import uuid

import pytest

from dags import run_dag, state_of, xcom
from faulty_proxy import HANG_UP, faulty_proxy
from jobdock_airflow.hooks import JobdockHook
from jobdock_airflow.idempotency import idempotency_key
from support import connection_env, runs_of


def dag_id(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_run_that_succeeds(jd, make_job, task_log, deferrable: bool) -> None:
    job = make_job('sleep 2; for i in $(seq 1 150); do echo line-$i; done; echo "greeting=$GREETING"')
    dr = run_dag(
        dag_id("success"),
        f"""
        JobdockRunJobOperator(
            task_id="run",
            job="{{{{ params.job }}}}",
            env={{"GREETING": "hello {{{{ dag_run.dag_id }}}}"}},
            params={{"job": {job!r}}},
            deferrable={deferrable!r},
            poll_interval=1,
            log_tail_lines=120,
        )
        """,
    )
    log = task_log()
    assert state_of(dr, "run") == "success", log[-3000:]
    [run] = runs_of(jd, job)
    assert run["status"] == "succeeded"
    assert xcom(dr, "run", "run_id") == run["id"] == xcom(dr, "run")
    assert xcom(dr, "run", "run_status") == "succeeded"
    # The tail (120 of 151 lines) is in the task log, with the templated env rendered.
    assert f"Last 120 log lines of Jobdock run {run['id']}" in log
    assert f"greeting=hello {dr.dag_id}" in log and "line-32\n" in log and "line-31\n" not in log
    assert run["idempotency_key"] == idempotency_key(dr.dag_id, "run", dr.run_id, -1, 1)
    if deferrable:  # the trigger, not the task, waited for the run
        assert f"Jobdock run {run['id']} is running" in log and "JobdockRunTrigger" in log
    assert jd.token not in log


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_run_that_fails_fails_the_task_with_its_reason(jd, make_job, task_log, deferrable: bool) -> None:
    job = make_job("echo doing-things; sleep 1; echo broken >&2; exit 3")
    dr = run_dag(
        dag_id("failure"),
        f"JobdockRunJobOperator(task_id='run', job={job!r}, deferrable={deferrable!r}, poll_interval=1)",
    )
    log = task_log()
    assert state_of(dr, "run") == "failed"
    [run] = runs_of(jd, job)
    assert (run["status"], run["exit_code"]) == ("failed", 3)
    assert xcom(dr, "run", "run_status") == "failed"
    message = (
        f"AirflowException: Jobdock run {run['id']} of job {job} ended failed (exit code 3): "
        f"{run['reason']}; logs: {run['logs_url']}"
    )
    assert message in log
    assert "stderr broken" in log  # the tail, before the failure
    assert jd.token not in log


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_run_past_its_timeout_is_cancelled_and_fails_the_task(jd, make_job, task_log, deferrable: bool) -> None:
    job = make_job("echo started; sleep 300")
    dr = run_dag(
        dag_id("timeout"),
        f"JobdockRunJobOperator(task_id='run', job={job!r}, deferrable={deferrable!r}, poll_interval=1, timeout=3)",
    )
    log = task_log()
    assert state_of(dr, "run") == "failed"
    [run] = runs_of(jd, job)
    assert jd.wait_final(run["id"], timeout=60)["status"] == "cancelled"
    assert f"Jobdock run {run['id']} of job {job} did not end within the timeout of 3" in log


def test_an_airflow_retry_starts_a_new_run_and_the_same_try_finds_its_run(jd, make_job, task_log) -> None:
    job = make_job("exit 7")
    dr = run_dag(
        dag_id("retries"),
        f"""
        JobdockRunJobOperator(
            task_id="run", job={job!r}, poll_interval=1,
            retries=1, retry_delay=datetime.timedelta(seconds=0),
        )
        """,
    )
    task_log()
    assert state_of(dr, "run") == "failed"
    runs = sorted(runs_of(jd, job), key=lambda r: r["created_at"])
    assert len(runs) == 2 and runs[0]["id"] != runs[1]["id"]
    keys = [idempotency_key(dr.dag_id, "run", dr.run_id, -1, try_number) for try_number in (1, 2)]
    assert [r["idempotency_key"] for r in runs] == keys
    # A request re-sent within a try (same key, same body) finds that try's run.
    again = JobdockHook().trigger_run(job, idempotency_key=keys[0])
    assert again["id"] == runs[0]["id"] and len(runs_of(jd, job)) == 2


def test_a_trigger_whose_answer_was_lost_starts_one_run(jd, make_job, task_log) -> None:
    job = make_job("echo fine")
    with faulty_proxy(jd.url) as proxy, connection_env("jobdock_flaky", proxy.url, jd.token):
        proxy.faults = {f"POST /api/v1/jobs/{job}/runs": [HANG_UP]}
        dr = run_dag(
            dag_id("resent"),
            f"JobdockRunJobOperator(task_id='run', job={job!r}, jobdock_conn_id='jobdock_flaky', poll_interval=1)",
        )
        assert proxy.count(f"POST /api/v1/jobs/{job}/runs") == 2
    log = task_log()
    assert state_of(dr, "run") == "success", log[-3000:]
    [run] = runs_of(jd, job)
    assert xcom(dr, "run", "run_id") == run["id"]
    assert "sending it again" in log


def test_without_wait_the_task_ends_once_the_run_is_queued(jd, make_job, task_log) -> None:
    job = make_job("sleep 5")
    dr = run_dag(dag_id("nowait"), f"JobdockRunJobOperator(task_id='run', job={job!r}, wait=False)")
    task_log()
    assert state_of(dr, "run") == "success"
    [run] = runs_of(jd, job)
    assert xcom(dr, "run", "run_id") == run["id"]
    assert xcom(dr, "run", "run_status") in ("queued", "starting", "running")
    jd.wait_final(run["id"])


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_the_sensor_waits_for_a_run(jd, make_job, task_log, deferrable: bool) -> None:
    good = make_job("sleep 2; echo done")
    bad = make_job("sleep 1; exit 4")
    hook = JobdockHook()
    good_run, bad_run = hook.trigger_run(good)["id"], hook.trigger_run(bad)["id"]
    dr = run_dag(
        dag_id("sensor"),
        f"""
        JobdockRunSensor(task_id="good", run_id={good_run!r}, poke_interval=1, deferrable={deferrable!r})
        JobdockRunSensor(task_id="bad", run_id={bad_run!r}, poke_interval=1, deferrable={deferrable!r})
        """,
    )
    log = task_log()
    assert state_of(dr, "good") == "success", log[-3000:]
    assert state_of(dr, "bad") == "failed"
    assert f"Jobdock run {bad_run} of job {bad} ended failed (exit code 4)" in log
