"""JobdockHook against the live engine, directly and through a proxy that misbehaves."""

from __future__ import annotations

import asyncio

import pytest

from faulty_proxy import HANG_UP, REFUSE, faulty_proxy
from jobdock_airflow.hooks import JobdockError, JobdockHook
from jobdock_airflow.retries import RetryPolicy
from support import connection_env, runs_of

FAST = RetryPolicy(max_retries=3, base_delay=0.2, max_delay=1)


def test_a_run_is_triggered_read_and_its_log_tail_read(jd, make_job) -> None:
    job = make_job("for i in 1 2 3 4 5; do echo line-$i; done; echo to-stderr >&2")
    hook = JobdockHook()
    run = hook.trigger_run(job, env={"GREETING": "hi"}, idempotency_key="hook-test-1")
    assert run["job"] == job and run["status"] not in ("succeeded", "failed")
    final = hook.get_run(run["id"], wait_seconds=30)
    while final["status"] not in ("succeeded", "failed"):
        final = hook.get_run(run["id"], wait_seconds=30)
    assert final["status"] == "succeeded", final
    tail = hook.get_log_tail(run["id"], lines=2)
    assert "line-5" in tail and "line-1" not in tail
    assert hook.cancel_run(run["id"]) is None  # it had ended: 409, not an error


def test_the_same_key_gives_the_same_run(jd, make_job) -> None:
    job = make_job("echo once")
    hook = JobdockHook()
    first = hook.trigger_run(job, idempotency_key="same-key")
    again = hook.trigger_run(job, idempotency_key="same-key")
    other = hook.trigger_run(job, idempotency_key="other-key")
    assert first["id"] == again["id"] != other["id"]
    assert len(runs_of(jd, job)) == 2


def test_refusals_are_retried_after_retry_after(jd, make_job) -> None:
    job = make_job("echo ok")
    with faulty_proxy(jd.url) as proxy, connection_env("jobdock_proxy", proxy.url, jd.token):
        proxy.faults = {f"POST /api/v1/jobs/{job}/runs": [REFUSE, REFUSE]}
        run = JobdockHook("jobdock_proxy", retry_policy=FAST).trigger_run(job)
        assert proxy.count(f"POST /api/v1/jobs/{job}/runs") == 3
    assert [r["id"] for r in runs_of(jd, job)] == [run["id"]]


def test_a_trigger_whose_answer_was_lost_is_resent_and_starts_one_run(jd, make_job) -> None:
    job = make_job("echo ok")
    with faulty_proxy(jd.url) as proxy, connection_env("jobdock_proxy", proxy.url, jd.token):
        proxy.faults = {f"POST /api/v1/jobs/{job}/runs": [HANG_UP]}
        run = JobdockHook("jobdock_proxy", retry_policy=FAST).trigger_run(job, idempotency_key="lost-answer")
        assert proxy.count(f"POST /api/v1/jobs/{job}/runs") == 2
    assert [r["id"] for r in runs_of(jd, job)] == [run["id"]]


def test_a_trigger_without_key_is_not_resent_after_a_lost_answer(jd, make_job) -> None:
    job = make_job("echo ok")
    with faulty_proxy(jd.url) as proxy, connection_env("jobdock_proxy", proxy.url, jd.token):
        proxy.faults = {f"POST /api/v1/jobs/{job}/runs": [HANG_UP]}
        with pytest.raises(JobdockError, match="failed"):
            JobdockHook("jobdock_proxy", retry_policy=FAST).trigger_run(job)
        assert proxy.count(f"POST /api/v1/jobs/{job}/runs") == 1
    assert len(runs_of(jd, job)) == 1  # the engine did start it; nobody heard


def test_errors_name_the_status_and_the_problem_and_hold_no_token(jd, make_job) -> None:
    with pytest.raises(JobdockError) as missing:
        JobdockHook().trigger_run("no-such-job-here")
    assert missing.value.status == 404 and "no-such-job-here" in str(missing.value)
    with connection_env("jobdock_bad", jd.url, "jd_wrong_token"):
        with pytest.raises(JobdockError) as refused:
            JobdockHook("jobdock_bad").get_run("anything")
    assert refused.value.status == 401
    assert "jd_wrong_token" not in str(refused.value) and jd.token not in str(missing.value)


def test_the_async_calls_long_poll_and_cancel(jd, make_job) -> None:
    job = make_job("sleep 300")
    hook = JobdockHook()
    run = hook.trigger_run(job)

    async def scenario() -> tuple[dict, dict | None, dict]:
        seen = await hook.aget_run(run["id"], wait_seconds=1)
        cancelled = await hook.acancel_run(run["id"])
        ended = await hook.aget_run(run["id"], wait_seconds=30)
        return seen, cancelled, ended

    seen, cancelled, ended = asyncio.run(scenario())
    assert seen["status"] in ("queued", "starting", "running")
    assert cancelled is not None and cancelled["id"] == run["id"]
    assert ended["status"] == "cancelled" or jd.wait_final(run["id"])["status"] == "cancelled"


def test_the_connection_test_button(jd) -> None:
    assert JobdockHook().test_connection()[0] is True
    with connection_env("jobdock_bad", jd.url, "jd_wrong_token"):
        ok, message = JobdockHook("jobdock_bad").test_connection()
    assert ok is False and "401" in message and "jd_wrong_token" not in message
