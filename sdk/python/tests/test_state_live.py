"""The state client against a live engine with the admin token: the empty state, writes,
If-Match, versions and revert. Marked engine_state: skipped only when the engine's OpenAPI
document has no /api/v1/jobs/{name}/state (conftest.state_engine says so in the skip)."""

from __future__ import annotations

import pytest

import jobdock
from conftest import unique
from jobdock import state
from jobdock_live import BUSYBOX_IMAGE, Engine

pytestmark = [pytest.mark.engine, pytest.mark.engine_state]


@pytest.fixture
def job(state_engine: Engine) -> str:
    name = unique("sdk-state")
    status, _, body = state_engine.request(
        "POST", "/api/v1/jobs", {"name": name, "image": BUSYBOX_IMAGE, "command": ["true"]})
    assert status == 201, f"creating job {name}: {status} {body}"
    return name


@pytest.fixture
def admin(state_engine: Engine, job: str) -> state.StateClient:
    return state.client(job, url=state_engine.url, token=state_engine.token)


def test_a_new_job_has_empty_state_at_version_0(state_engine: Engine, job: str,
                                                  admin: state.StateClient) -> None:
    status, headers, body = state_engine.request("GET", f"/api/v1/jobs/{job}/state")
    assert status == 200 and body == {}
    assert {k.lower(): v for k, v in headers.items()}["etag"] == '"0"'
    assert admin.read() == state.Snapshot({}, 0)
    assert admin.get() == {}
    assert list(admin.versions()) == []


def test_an_operator_write_is_current_at_once(admin: state.StateClient) -> None:
    written = admin.set({"cursor": "2026-12-01", "nested": {"a": [1, 2]}})
    assert written.held is False and written.version == 1
    assert admin.read() == state.Snapshot({"cursor": "2026-12-01", "nested": {"a": [1, 2]}}, 1)
    assert admin.set({"cursor": "2026-12-02"}).version == 2


def test_if_version_refuses_a_stale_write(admin: state.StateClient) -> None:
    first = admin.read()
    assert admin.set({"n": 1}, if_version=first.version).version == 1
    with pytest.raises(jobdock.StateConflict) as err:
        admin.set({"n": 2}, if_version=first.version)
    assert err.value.status == 412 and err.value.title
    assert admin.read() == state.Snapshot({"n": 1}, 1)
    assert admin.set({"n": 2}, if_version=1).version == 2


def test_versions_newest_first_and_revert(admin: state.StateClient) -> None:
    for n in range(1, 6):
        admin.set({"n": n})
    versions = list(admin.versions())
    assert [v.version for v in versions] == [5, 4, 3, 2, 1]
    assert [v.state for v in versions] == [{"n": n} for n in range(5, 0, -1)]
    assert all(v.created_at for v in versions)
    assert [v.version for v in admin.versions(limit=2)] == [5, 4]
    admin.revert(2)
    snap = admin.read()
    assert snap.state == {"n": 2} and snap.version > 5  # a revert is a new version


def test_an_unknown_job(state_engine: Engine) -> None:
    missing = state.client(unique("no-such-job"), url=state_engine.url, token=state_engine.token)
    with pytest.raises(jobdock.ApiError) as err:
        missing.get()
    assert err.value.status == 404


def test_a_wrong_token(state_engine: Engine, job: str) -> None:
    bad = state.client(job, url=state_engine.url, token="jd_wrong_token_000000000000")
    with pytest.raises(jobdock.ApiError) as err:
        bad.get()
    assert err.value.status == 401 and "jd_wrong_token" not in str(err.value)
