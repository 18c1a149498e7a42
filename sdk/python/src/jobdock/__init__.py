"""Jobdock's SDK for the scripts it runs.

    import jobdock
    from jobdock import log, state, lake, source

    batch = jobdock.config("BATCH", default=500, cast=int)   # the job's env
    token = jobdock.secret("ERP_TOKEN")                      # env var or /run/secrets/ERP_TOKEN
    log.info("starting", batch=batch)                        # level=info msg=starting batch=500
    jobdock.progress(10, 200, "orders")                      # ::jobdock::progress 10/200 orders
    cursor = state.get().get("cursor")                       # state kept between runs
    state.set({"cursor": "2026-12-05"})                      # current once the run succeeds

The core uses the standard library only. `lake` writes to object stores through fsspec
(`pip install 'jobdock[lake]'`) and Parquet through pyarrow (`jobdock[parquet]`).
"""

from . import lake, log, source, state
from ._http import Retry
from .config import Run, config, current_run, secret, secrets_dir
from .errors import (
    ApiError,
    EngineUnavailable,
    HttpError,
    InvalidConfig,
    JobdockError,
    LakeError,
    MissingConfig,
    MissingSecret,
    StateConflict,
)
from .protocol import heartbeat, heartbeats, progress

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "EngineUnavailable",
    "HttpError",
    "InvalidConfig",
    "JobdockError",
    "LakeError",
    "MissingConfig",
    "MissingSecret",
    "Retry",
    "Run",
    "StateConflict",
    "config",
    "current_run",
    "heartbeat",
    "heartbeats",
    "lake",
    "log",
    "progress",
    "secret",
    "secrets_dir",
    "source",
    "state",
]
