"""State kept between runs of a job: a JSON object the engine stores, versioned.

    from jobdock import state
    cursor = state.get().get("cursor")          # {} before the first run that set one
    ... load everything after the cursor ...
    state.set({"cursor": new_cursor})           # becomes the job's state if this run succeeds

Inside a run the calls use `JOBDOCK_URL` and the run's token `JOBDOCK_RUN_TOKEN` (a variable,
or the file `/run/secrets/JOBDOCK_RUN_TOKEN` for a job with `secret_delivery: files`). A run's
`set()` is held apart: the job's state changes only when the run succeeds, so that a failed
run never moves a cursor past data it did not load; until then `get()` in the same run
returns what it set. `commit()` makes the held state current at once, for long runs that
checkpoint. Outside a run (an operator's script), `state.client("job", url=..., token=...)`
reads and writes a job's state directly; `versions()` and `revert()` serve repairs.

Without `JOBDOCK_URL` (a job with `network: none`) every call raises `EngineUnavailable` at
once. Calls time out (30 s by default, for connecting and each read) and are retried on
connection errors, 502, 503, 504 and 429 (`Retry-After` honoured), five attempts in all.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from ._api import DEFAULT_TIMEOUT, EngineClient
from ._http import Response, Retry, safe_url
from .errors import ApiError, EngineUnavailable

__all__ = [
    "Snapshot", "Version", "Written", "StateClient", "client",
    "get", "read", "set", "commit", "versions", "revert",
]


@dataclass(frozen=True)
class Snapshot:
    """A state and its version (0 when the job has none yet). Pass the version to
    `set(..., if_version=)` to write only if nobody wrote in between."""

    state: dict[str, Any]
    version: int


@dataclass(frozen=True)
class Written:
    """What a write did. `held` is True for a run's write, which becomes the job's state
    when the run succeeds (or on `commit()`); `version` is the new version when the engine
    said it (an immediate write), else None."""

    version: Optional[int]
    held: bool


@dataclass(frozen=True)
class Version:
    """One stored version of a job's state: `created_at` is RFC 3339 text, `run_id` the run
    that wrote it (None for an operator's write or a revert)."""

    version: int
    state: dict[str, Any]
    created_at: str
    run_id: Optional[str]


class StateClient:
    """The state of one job. `job` defaults to `JOBDOCK_JOB`; `url` and `token` to the
    run's (see `jobdock._api.EngineClient`)."""

    def __init__(
        self,
        job: Optional[str] = None,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Retry = Retry(),
    ) -> None:
        self._api = EngineClient(url, token, timeout=timeout, retry=retry)
        job = job or os.environ.get("JOBDOCK_JOB")
        if not job:
            raise EngineUnavailable("no job: JOBDOCK_JOB is not set; pass the job's name")
        self.job = job
        self._path = f"/api/v1/jobs/{urllib.parse.quote(job, safe='')}/state"

    def __repr__(self) -> str:
        return f"StateClient(job={self.job!r}, api={self._api!r})"

    def read(self) -> Snapshot:
        """The state and its version. In a run: what this run set and has not committed, if
        anything, else the job's current state."""
        resp = self._api.call("GET", self._path)
        body = _json_object(resp, "state")
        return Snapshot(body, _version(resp) or 0)

    def get(self) -> dict[str, Any]:
        """The state (`{}` when there is none yet); see `read()`."""
        return self.read().state

    def set(self, state: Mapping[str, Any], *, if_version: Optional[int] = None) -> Written:
        """Replaces the state with `state`, a JSON object. With `if_version`, only if the
        state is still at that version; else raises `StateConflict`."""
        if not isinstance(state, Mapping):
            raise TypeError(f"the state must be a JSON object (a dict), not {type(state).__name__}")
        headers = {} if if_version is None else {"If-Match": f'"{int(if_version)}"'}
        resp = self._api.call("PUT", self._path, dict(state), headers=headers)
        return Written(_version(resp), held=resp.status == 202)

    def commit(self) -> Optional[int]:
        """Makes what this run set the job's current state now, rather than when the run
        succeeds; returns the new version. Only with a run token."""
        resp = self._api.call("POST", self._path + "/commit")
        return _version(resp)

    def versions(self, limit: Optional[int] = None) -> Iterator[Version]:
        """The stored versions, newest first, at most `limit` (all when None), fetched page
        by page as the iteration goes."""
        cursor: Optional[str] = None
        left = limit
        while left is None or left > 0:
            page_size = 100 if left is None else min(left, 100)
            resp = self._api.call(
                "GET", self._path + "/versions", query={"limit": page_size, "cursor": cursor}
            )
            page = _json_object(resp, "versions page")
            items = page.get("items")
            if not isinstance(items, list):
                raise _unexpected(resp, "a versions page without `items`")
            for item in items:
                if left is not None:
                    if left <= 0:
                        return
                    left -= 1
                yield Version(
                    version=int(item["version"]),
                    state=dict(item.get("state") or {}),
                    created_at=str(item.get("created_at") or ""),
                    run_id=item.get("run_id"),
                )
            cursor = page.get("next_cursor")
            if not cursor or not items:
                return

    def revert(self, version: int) -> Written:
        """Makes the state of `version` current again (as a new version)."""
        resp = self._api.call("POST", self._path + "/revert", {"version": int(version)})
        return Written(_version(resp), held=resp.status == 202)


def client(
    job: Optional[str] = None,
    *,
    url: Optional[str] = None,
    token: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    retry: Retry = Retry(),
) -> StateClient:
    """A `StateClient` for `job` (default: this run's) at `url` with `token`."""
    return StateClient(job, url=url, token=token, timeout=timeout, retry=retry)


# This run's job, from the environment; each call reads it anew.
def read() -> Snapshot:
    """`StateClient().read()`: this run's view of its job's state and its version."""
    return StateClient().read()


def get() -> dict[str, Any]:
    """`StateClient().get()`: this run's view of its job's state (`{}` when none)."""
    return StateClient().get()


def set(state: Mapping[str, Any], *, if_version: Optional[int] = None) -> Written:  # noqa: A001
    """`StateClient().set(state)`: held until the run succeeds (or `commit()`)."""
    return StateClient().set(state, if_version=if_version)


def commit() -> Optional[int]:
    """`StateClient().commit()`: make this run's state current now."""
    return StateClient().commit()


def versions(limit: Optional[int] = None) -> Iterator[Version]:
    """`StateClient().versions(limit)`: stored versions, newest first."""
    return StateClient().versions(limit)


def revert(version: int) -> Written:
    """`StateClient().revert(version)`."""
    return StateClient().revert(version)


def _version(resp: Response) -> Optional[int]:
    etag = (resp.headers.get("ETag") or "").strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    etag = etag.strip('"')
    if not etag:
        return None
    try:
        return int(etag)
    except ValueError:
        raise _unexpected(resp, f"an ETag that is no version number: {etag!r}") from None


def _json_object(resp: Response, what: str) -> dict[str, Any]:
    if not resp.body.strip():
        return {}
    try:
        body = resp.json()
    except ValueError:
        raise _unexpected(resp, f"a {what} that is not JSON") from None
    if not isinstance(body, dict):
        raise _unexpected(resp, f"a {what} that is not a JSON object")
    return body


def _unexpected(resp: Response, what: str) -> ApiError:
    return ApiError(
        f"the engine answered {resp.status} with {what}", method="GET", url=safe_url(resp.url),
        status=resp.status,
    )

