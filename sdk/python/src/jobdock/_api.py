"""A client of the engine's API, for the parts of the SDK that call it (`state`).

Inside a run it uses `JOBDOCK_URL` (the engine's address for runs) and `JOBDOCK_RUN_TOKEN`
(valid only for this run and its own job's state), which arrives as the job's secrets do: an
environment variable, or the file `/run/secrets/JOBDOCK_RUN_TOKEN`. Outside a run, pass
`url` and `token`, or set `JOBDOCK_URL` and `JOBDOCK_TOKEN` as for the `jobdock` command
line.

When there is no address, `EngineClient()` raises `EngineUnavailable` at once: a job with
`network: none` has no way to the engine, and a call must not hang trying. Every call has
a timeout and is retried on transient failures (`_http`). The token is sent only in the
`Authorization` header, is masked in `jobdock.log` lines and is never part of a message.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any, Mapping, Optional

from . import _http, _redact
from .config import secret, secrets_dir
from .errors import ApiError, EngineUnavailable, HttpError, StateConflict

DEFAULT_TIMEOUT = 30.0
RUN_TOKEN = "JOBDOCK_RUN_TOKEN"


class EngineClient:
    """Calls the engine at `url` with `token` (see the module's documentation for the
    defaults). `timeout` is in seconds, for connecting and for each read."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: _http.Retry = _http.Retry(),
    ) -> None:
        url = url or os.environ.get("JOBDOCK_URL") or None
        if not url:
            if os.environ.get("JOBDOCK_RUN_ID"):
                raise EngineUnavailable(
                    "JOBDOCK_URL is not set: this run has no way to the engine, as its job has "
                    "`network: none` (give the job a network to use the state API), or, on "
                    "Kubernetes and Nomad, the engine has no JOBDOCK_ADVERTISE_URL to give runs"
                )
            raise EngineUnavailable(
                "JOBDOCK_URL is not set: outside a Jobdock run, pass url= and token= "
                "(or set JOBDOCK_URL and JOBDOCK_TOKEN) to reach the engine"
            )
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EngineUnavailable(f"JOBDOCK_URL is not an http(s) address: {_http.safe_url(url)}")
        # The engine delivers the run token as it delivers the job's secrets: an environment
        # variable, or the file /run/secrets/JOBDOCK_RUN_TOKEN (`secret_delivery: files`).
        token = token or secret(RUN_TOKEN, default=None) or os.environ.get("JOBDOCK_TOKEN")
        if not token:
            raise EngineUnavailable(
                f"no token: {RUN_TOKEN} is neither an environment variable nor a file in "
                f"{secrets_dir()} (the engine gives every run one); outside a run pass token= "
                "or set JOBDOCK_TOKEN"
            )
        _redact.remember(token)
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retry = retry

    def __repr__(self) -> str:
        return f"EngineClient(url={_http.safe_url(self.url)!r}, token=***)"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        query: Optional[Mapping[str, Any]] = None,
    ) -> _http.Response:
        """One API call: `body` is sent as JSON when not None. Returns the answer when its
        status is below 400, else raises `ApiError` (`StateConflict` for 412)."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        all_headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        return _http.request(
            method, url, headers=all_headers, body=data, timeout=self.timeout,
            retry=self.retry, error=problem_error,
        )


def problem_error(
    message: str, *, method: str, url: str, status: Optional[int] = None,
    attempts: int = 1, body: str = "",
) -> HttpError:
    """An `ApiError` from an RFC 7807 problem body: the message says the call, the status,
    the problem's title, detail and field errors, and a hint for the usual causes."""
    title = detail = ""
    errors: list[dict[str, Any]] = []
    try:
        problem = json.loads(body) if body else None
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        title = str(problem.get("title") or "")
        detail = str(problem.get("detail") or "")
        raw_errors = problem.get("errors")
        if isinstance(raw_errors, list):
            errors = [e for e in raw_errors if isinstance(e, dict)]
    text = message
    if title and title not in message:
        text += f": {title}"
    if detail:
        text += f": {detail}"
    if errors:
        text += " (" + "; ".join(f"{e.get('field', '?')}: {e.get('message', '')}" for e in errors) + ")"
    hint = _HINTS.get(status or 0)
    if hint:
        text += f" [{hint}]"
    cls = StateConflict if status == 412 else ApiError
    return cls(
        _redact.mask(text), method=method, url=url, status=status, attempts=attempts,
        body=_redact.mask(body), title=title, detail=detail, errors=errors,
    )


_HINTS = {
    401: "the engine refused the token; a run token is dead once its run has ended",
    403: "the token may not do this; a run token reaches only its own job's state",
    412: "another writer changed the state first: read it again and retry",
}
