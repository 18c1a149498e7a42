"""The provider as Airflow sees it (entry point, connection type), and the parts that need no
engine: the idempotency key, the trigger's kwargs, the retry rules."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import httpx
import pytest

from jobdock_airflow.hooks import JobdockHook, endpoint_from_connection
from jobdock_airflow.idempotency import idempotency_key
from jobdock_airflow.retries import RetryPolicy, retry_after_seconds
from jobdock_airflow.triggers import JobdockRunTrigger


def test_the_entry_point_gives_the_provider_info() -> None:
    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("jobdock_airflow")]
    assert [ep.value for ep in found] == ["jobdock_airflow.get_provider_info:get_provider_info"]
    info = found[0].load()()
    assert info["package-name"] == "airflow-provider-jobdock"
    assert {"connection-type": "jobdock", "hook-class-name": "jobdock_airflow.hooks.JobdockHook"} in info[
        "connection-types"
    ]


def test_airflow_knows_the_jobdock_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    from jobdock_airflow.compat import AIRFLOW_V_3_0_PLUS

    manager = ProvidersManager()
    assert manager.providers["airflow-provider-jobdock"].version == "0.1.0"
    if AIRFLOW_V_3_0_PLUS:  # hooks are the task runtime's business there
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hook = ProvidersManagerTaskRuntime().hooks["jobdock"]
    else:
        hook = manager.hooks["jobdock"]
    assert hook is not None and hook.hook_class_name == "jobdock_airflow.hooks.JobdockHook"
    assert hook.connection_id_attribute_name == "jobdock_conn_id"


def test_the_connection_names_the_engine_and_the_token() -> None:
    from airflow.models.connection import Connection

    as_json = Connection(conn_id="a", conn_type="jobdock", host="https://jd.example:8443/", password="s3cret")
    endpoint = endpoint_from_connection(as_json)
    assert (endpoint.base_url, endpoint.token) == ("https://jd.example:8443", "s3cret")
    assert "s3cret" not in repr(endpoint)
    as_uri = Connection(conn_id="b", uri="jobdock://:s3cret@127.0.0.1:8080")
    assert endpoint_from_connection(as_uri).base_url == "http://127.0.0.1:8080"
    with pytest.raises(Exception, match="no password"):
        endpoint_from_connection(Connection(conn_id="c", conn_type="jobdock", host="http://x"))


def test_the_idempotency_key_is_one_per_try_and_bounded() -> None:
    first = idempotency_key("etl", "load", "manual__2026-01-01", -1, 1)
    assert first == idempotency_key("etl", "load", "manual__2026-01-01", -1, 1)
    others = {
        idempotency_key("etl", "load", "manual__2026-01-01", -1, 2),
        idempotency_key("etl", "load", "manual__2026-01-01", 0, 1),
        idempotency_key("etl", "load", "scheduled__2026-01-01", -1, 1),
        idempotency_key("etl", "save", "manual__2026-01-01", -1, 1),
        idempotency_key("etx", "load", "manual__2026-01-01", -1, 1),
    }
    assert first not in others and len(others) == 5
    assert first.startswith("airflow:etl.load:") and len(first.rsplit(":", 1)[1]) == 64
    long = idempotency_key("d" * 250, "t" * 250, "r" * 250, 12345, 99)
    assert len(long) <= 255 and long.isprintable() and " " not in long


def test_the_trigger_kwargs_hold_the_connection_id_and_no_token(jd) -> None:
    trigger = JobdockRunTrigger(run_id="run-1", jobdock_conn_id="jobdock_default", poll_interval=5, deadline=None)
    classpath, kwargs = trigger.serialize()
    assert classpath == "jobdock_airflow.triggers.JobdockRunTrigger"
    assert set(kwargs) == {"run_id", "jobdock_conn_id", "poll_interval", "deadline", "cancel_on_kill"}
    assert jd.token not in json.dumps(kwargs) and jd.token not in repr(trigger)
    # The connection the trigger would use does hold the token, so the check above means something.
    assert JobdockHook("jobdock_default").endpoint().token == jd.token
    # What serialize() gives rebuilds the same trigger, as the triggerer does.
    assert JobdockRunTrigger(**kwargs).serialize() == (classpath, kwargs)


def _response(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(status, headers=headers)


def test_the_retry_rules() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=1, max_delay=4, max_retry_after=10)
    assert policy.after_response(_response(503, "7"), 0, resendable=False) == 7
    assert policy.after_response(_response(429, "120"), 0, resendable=False) == 10
    assert 0.5 <= policy.after_response(_response(502), 0, resendable=True) <= 1
    assert 2 <= policy.after_response(_response(500), 2, resendable=True) <= 4
    assert policy.after_response(_response(500), 0, resendable=False) is None
    assert policy.after_response(_response(503, "1"), 3, resendable=True) is None
    for final in (200, 201, 400, 401, 404, 409, 422):
        assert policy.after_response(_response(final), 0, resendable=True) is None
    request = httpx.Request("POST", "http://x")
    assert policy.after_error(httpx.ConnectError("no", request=request), 0, resendable=False) is not None
    assert policy.after_error(httpx.ReadTimeout("slow", request=request), 0, resendable=False) is None
    assert policy.after_error(httpx.ReadTimeout("slow", request=request), 0, resendable=True) is not None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_seconds("soon") is None
