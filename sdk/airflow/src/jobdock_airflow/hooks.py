"""The Jobdock connection and the calls the operator, sensor and trigger make to the engine.

HTTP goes through httpx: Airflow 2.10 and 3.x both install it (the 3.x task SDK speaks to the
API server with it), and one library gives the same client synchronously (operator, sensor)
and asynchronously (trigger), so the retry rules are written once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from airflow.exceptions import AirflowException

from jobdock_airflow.compat import BaseHook
from jobdock_airflow.retries import RetryPolicy

API = "/api/v1"
# Requests other than long polls answer quickly; a long poll gets its wait on top.
REQUEST_TIMEOUT = 30.0
# The engine caps ?wait_seconds at 60.
MAX_WAIT_SECONDS = 60


class JobdockError(AirflowException):
    """A call to the engine that failed: `status` is the HTTP status (None when no answer
    came) and `problem` the engine's problem document, when it sent one."""

    def __init__(self, message: str, status: int | None = None, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is and how to authenticate to it. `token` never goes into a log,
    an XCom or a trigger's kwargs."""

    base_url: str
    token: str = ""
    verify: bool | str = True

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r}, token='***', verify={self.verify!r})"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}


class JobdockHook(BaseHook):
    """Talks to one Jobdock engine, as described by an Airflow connection of type `jobdock`:
    host is the engine's base URL (e.g. `https://jobdock.example.com`), password an API token
    with at least the `trigger` scope. Extra may hold `{"verify": false}` or a CA bundle path.

    Transient failures are retried (see `jobdock_airflow.retries`)."""

    conn_name_attr = "jobdock_conn_id"
    default_conn_name = "jobdock_default"
    conn_type = "jobdock"
    hook_name = "Jobdock"

    def __init__(
        self,
        jobdock_conn_id: str = default_conn_name,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.jobdock_conn_id = jobdock_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._endpoint: Endpoint | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {"host": "Engine URL", "password": "API token"},
            "placeholders": {
                "host": "https://jobdock.example.com",
                "password": "a Jobdock token with the trigger scope",
                "extra": '{"verify": true}',
            },
        }

    # -- the connection ----------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            self._endpoint = endpoint_from_connection(self.get_connection(self.jobdock_conn_id))
        return self._endpoint

    async def aendpoint(self) -> Endpoint:
        if self._endpoint is None:
            getter = getattr(self, "aget_connection", None)  # Airflow 3
            if getter is not None:
                conn = await getter(self.jobdock_conn_id)
            else:  # Airflow 2: the metadata database, off the event loop
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(self.get_connection)(self.jobdock_conn_id)
            self._endpoint = endpoint_from_connection(conn)
        return self._endpoint

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: the token must be accepted by the engine."""
        try:
            self._json(self._send("GET", f"{API}/jobs", params={"limit": 1}), (200,))
        except Exception as err:  # the UI shows the message
            return False, str(err)
        return True, "Connection to the Jobdock engine works"

    # -- synchronous calls (operator, sensor) ------------------------------------------

    def trigger_run(
        self, job: str, env: dict[str, str] | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Starts a run of `job` (201), or returns the run an earlier call with the same
        `idempotency_key` started (200). Only a call with a key is re-sent after an answer
        that may have come after the run was created."""
        response = self._send(
            "POST",
            f"{API}/jobs/{quote(job, safe='')}/runs",
            json=trigger_body(env, idempotency_key),
            resendable=idempotency_key is not None,
        )
        return self._json(response, (200, 201), what=f"triggering job {job}")

    def get_run(self, run_id: str, wait_seconds: int = 0) -> dict[str, Any]:
        """The run; with `wait_seconds` the engine holds the answer until the run ends or the
        wait is over (a long poll, at most 60 s)."""
        params, timeout = long_poll(wait_seconds)
        response = self._send("GET", f"{API}/runs/{quote(run_id, safe='')}", params=params, timeout=timeout)
        return self._json(response, (200,), what=f"reading run {run_id}")

    def get_log_tail(self, run_id: str, lines: int = 100) -> str:
        """The last `lines` lines of the run's log, as text."""
        response = self._send(
            "GET",
            f"{API}/runs/{quote(run_id, safe='')}/logs",
            params={"tail": max(1, min(lines, 10000))},
            accept="text/plain",
        )
        if response.status_code != 200:
            raise error_from_response(response, f"reading the log of run {run_id}")
        return response.text

    def cancel_run(self, run_id: str) -> dict[str, Any] | None:
        """Asks the engine to cancel the run. Returns the run, or None when it had already
        ended (409), which is not an error."""
        response = self._send("POST", f"{API}/runs/{quote(run_id, safe='')}/cancel")
        if response.status_code == 409:
            return None
        return self._json(response, (200, 202), what=f"cancelling run {run_id}")

    # -- asynchronous calls (trigger) --------------------------------------------------

    async def aget_run(self, run_id: str, wait_seconds: int = 0) -> dict[str, Any]:
        params, timeout = long_poll(wait_seconds)
        response = await self._asend("GET", f"{API}/runs/{quote(run_id, safe='')}", params=params, timeout=timeout)
        return self._json(response, (200,), what=f"reading run {run_id}")

    async def acancel_run(self, run_id: str) -> dict[str, Any] | None:
        response = await self._asend("POST", f"{API}/runs/{quote(run_id, safe='')}/cancel")
        if response.status_code == 409:
            return None
        return self._json(response, (200, 202), what=f"cancelling run {run_id}")

    # -- transport ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        resendable: bool = True,
        accept: str | None = None,
    ) -> httpx.Response:
        endpoint = self.endpoint()
        headers = endpoint.headers | ({"Accept": accept} if accept else {})
        with httpx.Client(base_url=endpoint.base_url, headers=headers, verify=endpoint.verify) as client:
            attempt = 0
            while True:
                try:
                    response = client.request(method, path, json=json, params=params, timeout=timeout)
                    delay = self.retry_policy.after_response(response, attempt, resendable)
                    what = f"answered {response.status_code}"
                except httpx.TransportError as err:
                    delay = self.retry_policy.after_error(err, attempt, resendable)
                    if delay is None:
                        raise JobdockError(f"{method} {endpoint.base_url}{path} failed: {err!r}") from err
                    what = f"failed ({type(err).__name__})"
                if delay is None:
                    return response
                attempt += 1
                self._log_retry(method, path, what, delay, attempt)
                time.sleep(delay)

    async def _asend(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> httpx.Response:
        # The trigger only reads runs and cancels them: both are safe to send again.
        endpoint = await self.aendpoint()
        async with httpx.AsyncClient(
            base_url=endpoint.base_url, headers=endpoint.headers, verify=endpoint.verify
        ) as client:
            attempt = 0
            while True:
                try:
                    response = await client.request(method, path, params=params, timeout=timeout)
                    delay = self.retry_policy.after_response(response, attempt, True)
                    what = f"answered {response.status_code}"
                except httpx.TransportError as err:
                    delay = self.retry_policy.after_error(err, attempt, True)
                    if delay is None:
                        raise JobdockError(f"{method} {endpoint.base_url}{path} failed: {err!r}") from err
                    what = f"failed ({type(err).__name__})"
                if delay is None:
                    return response
                attempt += 1
                self._log_retry(method, path, what, delay, attempt)
                await asyncio.sleep(delay)

    def _log_retry(self, method: str, path: str, what: str, delay: float, attempt: int) -> None:
        self.log.warning(
            "Jobdock %s %s %s; sending it again in %.1f s (retry %d of %d)",
            method,
            path,
            what,
            delay,
            attempt,
            self.retry_policy.max_retries,
        )

    @staticmethod
    def _json(response: httpx.Response, expected: tuple[int, ...], what: str = "") -> dict[str, Any]:
        if response.status_code in expected:
            return response.json()
        raise error_from_response(response, what)


def endpoint_from_connection(conn: Any) -> Endpoint:
    """The engine's base URL and token from a `jobdock` connection. Host is the base URL; a
    host without a scheme (the URI form `jobdock://:TOKEN@host:port`) gets the connection's
    schema, or http, and its port."""
    host = (conn.host or "").strip()
    if not host:
        raise JobdockError(f"connection {conn.conn_id!r} has no host: set it to the engine's base URL")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    if not conn.password:
        raise JobdockError(f"connection {conn.conn_id!r} has no password: set it to a Jobdock API token")
    extra = conn.extra_dejson or {}
    return Endpoint(base_url=host.rstrip("/"), token=conn.password, verify=extra.get("verify", True))


def trigger_body(env: dict[str, str] | None, idempotency_key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    return body


def long_poll(wait_seconds: int) -> tuple[dict[str, Any] | None, float]:
    """The query and the read timeout of a status request that waits up to `wait_seconds`."""
    wait = max(0, min(int(wait_seconds), MAX_WAIT_SECONDS))
    if wait == 0:
        return None, REQUEST_TIMEOUT
    return {"wait_seconds": wait}, REQUEST_TIMEOUT + wait


def error_from_response(response: httpx.Response, what: str) -> JobdockError:
    """A JobdockError naming the call, the status and the engine's problem title and detail."""
    problem: dict[str, Any] = {}
    try:
        decoded = response.json()
        if isinstance(decoded, dict):
            problem = decoded
    except ValueError:
        pass
    text = problem.get("detail") or problem.get("title") or response.text[:500] or response.reason_phrase
    prefix = f"Jobdock: {what} answered" if what else "Jobdock answered"
    return JobdockError(f"{prefix} {response.status_code}: {text}", response.status_code, problem)
