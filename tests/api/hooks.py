"""schemathesis hooks of tests/api/fuzz: the fuzzer's token must not revoke itself."""

import os

import schemathesis

OWN_TOKEN_ID = os.environ["JOBDOCK_FUZZ_OWN_TOKEN_ID"]


@schemathesis.hook
def filter_case(ctx, case):
    """Skip revoking the token the fuzzer authenticates with; every other id is fair game."""
    return not (
        case.method.upper() == "DELETE"
        and case.path == "/api/v1/tokens/{id}"
        and (case.path_parameters or {}).get("id") == OWN_TOKEN_ID
    )
