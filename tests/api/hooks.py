"""schemathesis hooks of tests/api/fuzz: the fuzzer's token must not revoke itself, and a
log is not followed."""

import os

import schemathesis

OWN_TOKEN_ID = os.environ["JOBDOCK_FUZZ_OWN_TOKEN_ID"]


@schemathesis.hook
def filter_case(ctx, case):
    """Skip revoking the token the fuzzer authenticates with; every other id is fair game.
    Skip following a run's log: a follow stays open until the run ends, by design, and a
    fuzzed job's run retried with backoff lasts longer than any request timeout (seen: a
    read timed out). The e2e tests follow logs to their end."""
    if (
        case.method.upper() == "DELETE"
        and case.path == "/api/v1/tokens/{id}"
        and (case.path_parameters or {}).get("id") == OWN_TOKEN_ID
    ):
        return False
    follow = str((case.query or {}).get("follow", "")).lower()
    return not (case.path == "/api/v1/runs/{id}/logs" and follow in ("true", "1"))
