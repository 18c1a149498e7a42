"""{{name}}: reads its configuration and secrets, loads the records changed since the last
successful run from a REST source, and keeps its bookmark in the job's state.

In Jobdock the engine provides the configuration (the job's `env`), the secrets and the
state. To try it on your machine against an engine, with an operator token:
`JOBDOCK_URL=… JOBDOCK_TOKEN=… JOBDOCK_JOB={{name}} SOURCE_TOKEN=… python -m {{module}}.main`.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

import jobdock
from jobdock import log, source, state


def changed_since(
    records: Iterable[dict[str, Any]], since: Optional[str]
) -> list[dict[str, Any]]:
    """The records updated after `since` (all of them without a bookmark), oldest first."""
    new = [r for r in records if since is None or r["updated_at"] > since]
    return sorted(new, key=lambda r: r["updated_at"])


def bookmark(loaded: list[dict[str, Any]], since: Optional[str]) -> Optional[str]:
    """Where the next run starts: after the newest record loaded."""
    return max((r["updated_at"] for r in loaded), default=since)


def run() -> int:
    api = source.Source(
        jobdock.config("SOURCE_URL"),
        headers={"Authorization": f"Bearer {jobdock.secret('SOURCE_TOKEN')}"},
    )
    since = state.get().get("since")
    log.info("starting", since=since)

    # The source pages with a `next` link; see jobdock.source for the other kinds.
    params = {"since": since} if since else {}
    records = api.records("records", params=params, items="items",
                          pagination=source.NextLink("next"))
    loaded = changed_since(records, since)
    for done, record in enumerate(loaded, start=1):
        # Write each record where it belongs: a database, or jobdock.lake for raw files.
        jobdock.progress(done, len(loaded), "records")
    # Held until the run succeeds: a run that fails later never moves the bookmark.
    state.set({"since": bookmark(loaded, since)})
    log.info("done", records=len(loaded), since=bookmark(loaded, since))
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except jobdock.JobdockError as e:
        # A missing setting or secret, a source or engine that failed: say what, and fail.
        log.error(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main()
