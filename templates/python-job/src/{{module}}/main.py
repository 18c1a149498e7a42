"""{{name}}: reads its configuration and secrets, loads what is new since the last
successful run, and keeps its bookmark in the job's state.

In Jobdock the engine provides the configuration (the job's `env`), the secrets and the
state. To try it on your machine against an engine, with an operator token:
`JOBDOCK_URL=… JOBDOCK_TOKEN=… JOBDOCK_JOB={{name}} SOURCE_TOKEN=… python -m {{module}}.main`.
"""

from __future__ import annotations

import sys

import jobdock
from jobdock import log, state


def fetch(source_url: str, token: str, since: str | None) -> list[dict]:
    """The records changed since `since`. Replace this with your source: for a REST API,
    `jobdock.source` pages through it with retries that honour 429 and Retry-After."""
    del source_url, token  # used by a real source
    records = [
        {"id": 1, "updated_at": "2026-12-01T08:00:00Z"},
        {"id": 2, "updated_at": "2026-12-02T08:00:00Z"},
    ]
    return [r for r in records if since is None or r["updated_at"] > since]


def run() -> int:
    source_url = jobdock.config("SOURCE_URL", default="https://api.example.com")
    token = jobdock.secret("SOURCE_TOKEN")
    since = state.get().get("since")
    log.info("starting", source=source_url, since=since)

    records = fetch(source_url, token, since)
    for done, record in enumerate(records, start=1):
        # Write each record where it belongs (a database, or jobdock.lake for raw files).
        jobdock.progress(done, len(records), "records")
    if records:
        # Held until the run succeeds: a run that fails later never moves the bookmark.
        state.set({"since": max(r["updated_at"] for r in records)})
    log.info("done", records=len(records))
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except jobdock.JobdockError as e:
        # A missing setting or secret, the engine unreachable: say what, and fail the run.
        log.error(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
