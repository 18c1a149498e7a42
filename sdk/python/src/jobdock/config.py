"""The run's configuration, secrets and identity.

Jobdock hands a run its job's `env` as environment variables, and its secrets either as
environment variables or, with `secret_delivery: files`, as files `/run/secrets/<NAME>`.
`config()` reads the first, `secret()` reads either, so that a script does not care how the
job delivers its secrets:

    batch = jobdock.config("BATCH", default=100, cast=int)
    dry_run = jobdock.config("DRY_RUN", default=False, cast=bool)
    password = jobdock.secret("ERP_PASSWORD")

A variable that is missing and has no default raises `MissingConfig` (`MissingSecret` for a
secret) naming the variable and how to set it; a value that does not convert raises
`InvalidConfig`. Secret values are remembered (in this process only) so that `jobdock.log`
masks them in its lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union, overload

from . import _redact
from .errors import InvalidConfig, MissingConfig, MissingSecret

T = TypeVar("T")

#: Where secrets delivered as files are, unless `JOBDOCK_SECRETS_DIR` says otherwise.
DEFAULT_SECRETS_DIR = "/run/secrets"

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Missing()


@dataclass(frozen=True)
class Run:
    """Who this run is: `JOBDOCK_RUN_ID`, `JOBDOCK_JOB`, `JOBDOCK_ATTEMPT`. Outside Jobdock
    the fields are None (`attempt` is 1) and `inside_jobdock` is False."""

    id: Optional[str]
    job: Optional[str]
    attempt: int

    @property
    def inside_jobdock(self) -> bool:
        return self.id is not None


def current_run() -> Run:
    """The run this process belongs to, from its environment."""
    attempt = os.environ.get("JOBDOCK_ATTEMPT", "")
    return Run(
        id=os.environ.get("JOBDOCK_RUN_ID") or None,
        job=os.environ.get("JOBDOCK_JOB") or None,
        attempt=int(attempt) if attempt.isdigit() else 1,
    )


def secrets_dir() -> Path:
    """The directory of secrets delivered as files: `JOBDOCK_SECRETS_DIR`, else
    `/run/secrets`."""
    return Path(os.environ.get("JOBDOCK_SECRETS_DIR") or DEFAULT_SECRETS_DIR)


@overload
def config(name: str) -> str: ...
@overload
def config(name: str, default: T) -> Union[str, T]: ...
@overload
def config(name: str, *, cast: Callable[[str], T]) -> T: ...
@overload
def config(name: str, default: T, cast: Callable[[str], T]) -> T: ...


def config(name: str, default: Any = _REQUIRED, cast: Optional[Callable[[str], Any]] = None) -> Any:
    """The value of the configuration variable `name` (one of the job's `env`).

    - Missing, with a `default`: the default, as given (it is not cast).
    - Missing, without one: raises `MissingConfig`, which says how to set it.
    - `cast` converts the text: `int`, `float`, `bool` (accepts 1/0, true/false, yes/no,
      on/off, any case), `json.loads`, or any function of one string. A value it cannot
      convert raises `InvalidConfig` naming the variable.

    An empty variable counts as set (its value is "")."""
    value = os.environ.get(name)
    if value is None:
        if default is not _REQUIRED:
            return default
        job = os.environ.get("JOBDOCK_JOB") or "JOB"
        raise MissingConfig(
            name,
            f"configuration variable {name} is not set: add it to the job's env "
            f"(`env: {{{name}: ...}}` in the job file, then `jobdock jobs apply -f` it, or "
            f"`env` in the trigger's overrides); a secret is set with "
            f"`jobdock secrets set {job} {name}` and read with jobdock.secret({name!r})",
        )
    return _cast(name, value, cast)


@overload
def secret(name: str) -> str: ...
@overload
def secret(name: str, default: T) -> Union[str, T]: ...


def secret(name: str, default: Any = _REQUIRED) -> Any:
    """The value of the secret `name`, delivered as the file `<secrets dir>/<name>` or as the
    environment variable `name` (the file wins when both exist).

    A file's content is returned exactly as stored: Jobdock stores what was set
    (`jobdock secrets set` already drops the newline that `echo value |` adds).
    Missing, without a default: raises `MissingSecret` naming the secret, where it was looked
    for and the command that sets it. The value never appears in an error or a log line."""
    _check_name(name)
    path = secrets_dir() / name
    value: Optional[str]
    try:
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        value = os.environ.get(name)
    except IsADirectoryError:
        value = os.environ.get(name)
    except PermissionError as err:
        raise MissingSecret(
            name, f"secret {name}: the file {path} exists but cannot be read ({err.strerror})"
        ) from None
    if value is None:
        if default is not _REQUIRED:
            return default
        job = os.environ.get("JOBDOCK_JOB") or "JOB"
        raise MissingSecret(
            name,
            f"secret {name} is not set: neither the environment variable {name} nor the file "
            f"{path} exists; set it with `jobdock secrets set {job} {name}`",
        )
    _redact.remember(value)
    return value


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a secret name: {name!r}")


def _cast(name: str, value: str, cast: Optional[Callable[[str], Any]]) -> Any:
    if cast is None or cast is str:
        return value
    if cast is bool:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidConfig(
            name, f"{name}={value!r} is not a boolean: use true/false, 1/0, yes/no or on/off"
        )
    try:
        return cast(value)
    except Exception as err:  # noqa: BLE001 - any failure of a user's cast means a bad value
        what = getattr(cast, "__name__", "cast")
        raise InvalidConfig(
            name, f"{name}={value!r} could not be converted by {what}: {err}"
        ) from None
