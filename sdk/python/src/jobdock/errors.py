"""The exceptions of the SDK. Every one derives from `JobdockError`.

No message ever holds a secret value or a token: a missing secret is named, never shown, and
an HTTP error shows the method, the address (with credential-like query values masked) and
what the server said.
"""

from __future__ import annotations

from typing import Any, Optional


class JobdockError(Exception):
    """Base class of every error the SDK raises."""


class MissingConfig(JobdockError, LookupError):
    """A configuration variable the script asked for is not set (and had no default).

    `name` is the variable's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # LookupError subclasses would otherwise repr() a KeyError
        return str(self.args[0])


class MissingSecret(MissingConfig):
    """A secret the script asked for is neither an environment variable nor a file in the
    secrets directory. `name` is the secret's name; the message says how to set it."""


class InvalidConfig(JobdockError, ValueError):
    """A configuration variable is set but its value could not be converted (`cast`).

    For a secret the message names the secret but never shows its value."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class EngineUnavailable(JobdockError):
    """The engine cannot be reached from here at all: `JOBDOCK_URL` is not set (a job with
    `network: none`, or code running outside Jobdock), or there is no token. Raised at once,
    before any network call."""


class HttpError(JobdockError):
    """An HTTP call failed: a status the SDK does not retry, or the last of its retries.

    `status` is the HTTP status, or None when no answer came (connection refused, reset,
    timed out). `url` has credential-like query values masked. `attempts` is how many
    requests were made."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: Optional[int] = None,
        attempts: int = 1,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.attempts = attempts
        self.body = body


class ApiError(HttpError):
    """The engine answered with an error: an RFC 7807 problem. `title`, `detail` and
    `errors` (a list of `{"field", "message"}`) are the problem's members."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: Optional[int] = None,
        attempts: int = 1,
        body: str = "",
        title: str = "",
        detail: str = "",
        errors: Optional[list[dict[str, Any]]] = None,
    ) -> None:
        super().__init__(message, method=method, url=url, status=status, attempts=attempts, body=body)
        self.title = title
        self.detail = detail
        self.errors = errors or []


class StateConflict(ApiError):
    """A state write with an expected version (`If-Match`) lost: another writer changed the
    state first (HTTP 412). Read the state again and retry the change."""


class LakeError(JobdockError):
    """A data-lake write cannot go on: a missing optional dependency (fsspec, pyarrow, s3fs,
    adlfs), a record that does not fit the file format, or a writer used after close."""
