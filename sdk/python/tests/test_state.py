"""The state client against an in-process engine that follows the state API's contract:
reads, held writes and commit with a run token, If-Match, versions and revert, retries,
and the errors when the engine cannot be reached. The same calls against the live engine
are in test_state_live.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import jobdock
from conftest import Reply, Seen, TestServer
from fake_engine import ADMIN, RUN, FakeEngine
from jobdock import state
from jobdock._http import Retry


@pytest.fixture
def fake(server: TestServer) -> FakeEngine:
    engine = FakeEngine()
    server.handler = engine
    return engine


@pytest.fixture
def in_run(monkeypatch: pytest.MonkeyPatch, server: TestServer, fake: FakeEngine) -> FakeEngine:
    """The environment the engine gives a run of the job `orders`."""
    monkeypatch.setenv("JOBDOCK_URL", server.url)
    monkeypatch.setenv("JOBDOCK_RUN_TOKEN", RUN)
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    monkeypatch.setenv("JOBDOCK_RUN_ID", "run-42")
    return fake


def test_no_url_in_a_run_fails_at_once_saying_the_job_has_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBDOCK_RUN_ID", "run-1")
    monkeypatch.setenv("JOBDOCK_JOB", "offline")
    monkeypatch.setenv("JOBDOCK_RUN_TOKEN", RUN)
    for call in (state.get, lambda: state.set({"a": 1}), state.commit, lambda: list(state.versions())):
        started = time.monotonic()
        with pytest.raises(jobdock.EngineUnavailable, match="JOBDOCK_URL is not set.*network: none"):
            call()
        assert time.monotonic() - started < 0.1


def test_no_url_outside_a_run_says_how_to_pass_one() -> None:
    with pytest.raises(jobdock.EngineUnavailable, match="pass url= and token="):
        state.get()


def test_no_token(monkeypatch: pytest.MonkeyPatch, server: TestServer) -> None:
    monkeypatch.setenv("JOBDOCK_URL", server.url)
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    with pytest.raises(jobdock.EngineUnavailable, match="JOBDOCK_RUN_TOKEN is neither an environment variable nor a file"):
        state.get()
    assert server.seen == []


def test_the_run_token_as_a_file(
    monkeypatch: pytest.MonkeyPatch, server: TestServer, fake: FakeEngine, clean_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`secret_delivery: files`: the engine delivers the run token as /run/secrets/JOBDOCK_RUN_TOKEN."""
    monkeypatch.setenv("JOBDOCK_URL", server.url)
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    (clean_env / "JOBDOCK_RUN_TOKEN").write_text(RUN)
    assert state.set({"from": "file"}).held
    assert server.seen[0].headers["Authorization"] == f"Bearer {RUN}"
    jobdock.log.info(f"the token is {RUN}")
    assert RUN not in capsys.readouterr().out  # masked, as a secret


def test_no_job(monkeypatch: pytest.MonkeyPatch, server: TestServer) -> None:
    with pytest.raises(jobdock.EngineUnavailable, match="no job"):
        state.client(url=server.url, token=ADMIN)


def test_a_url_that_is_not_http() -> None:
    with pytest.raises(jobdock.EngineUnavailable, match="not an http"):
        state.client("orders", url="ftp://x", token=ADMIN)


def test_a_run_reads_empty_state_then_its_held_write(in_run: FakeEngine, server: TestServer) -> None:
    assert state.get() == {}
    assert state.read() == state.Snapshot({}, 0)
    written = state.set({"cursor": "2026-12-01", "rows": 10})
    assert written == state.Written(version=None, held=True)
    # the run sees what it set, the job's state has not changed yet
    assert state.get() == {"cursor": "2026-12-01", "rows": 10}
    admin = state.client("orders", url=server.url, token=ADMIN)
    assert admin.read() == state.Snapshot({}, 0)
    # the engine makes it current when the run succeeds
    in_run.commit_run("orders")
    assert admin.read() == state.Snapshot({"cursor": "2026-12-01", "rows": 10}, 1)
    put = [s for s in server.seen if s.method == "PUT"][0]
    assert put.path == "/api/v1/jobs/orders/state"
    assert put.headers["Authorization"] == f"Bearer {RUN}"
    assert put.headers["Content-Type"] == "application/json"
    assert put.json() == {"cursor": "2026-12-01", "rows": 10}


def test_commit_makes_the_held_state_current_now(in_run: FakeEngine, server: TestServer) -> None:
    state.set({"checkpoint": 1})
    assert state.commit() == 1
    state.set({"checkpoint": 2})
    assert state.commit() == 2
    admin = state.client("orders", url=server.url, token=ADMIN)
    assert admin.read() == state.Snapshot({"checkpoint": 2}, 2)
    assert [v.run_id for v in admin.versions()] == ["run-42", "run-42"]


def test_an_operator_write_is_current_at_once_and_if_version_guards_it(
    fake: FakeEngine, server: TestServer
) -> None:
    admin = state.client("orders", url=server.url, token=ADMIN)
    first = admin.read()
    assert admin.set({"n": 1}, if_version=first.version) == state.Written(version=1, held=False)
    assert admin.set({"n": 2}) == state.Written(version=2, held=False)
    with pytest.raises(jobdock.StateConflict) as err:
        admin.set({"n": 3}, if_version=1)
    assert err.value.status == 412 and err.value.attempts == 1
    assert "version 2" in err.value.detail and "read it again" in str(err.value)
    assert [s.headers.get("If-Match") for s in server.seen if s.method == "PUT"] == ['"0"', None, '"1"']
    assert admin.get() == {"n": 2}


def test_versions_newest_first_across_pages_and_revert(fake: FakeEngine, server: TestServer) -> None:
    admin = state.client("orders", url=server.url, token=ADMIN)
    for n in range(1, 251):
        admin.set({"n": n})
    versions = list(admin.versions())
    assert [v.version for v in versions] == list(range(250, 0, -1))
    assert versions[0].state == {"n": 250} and versions[0].created_at and versions[0].run_id is None
    pages = [s for s in server.seen if "/versions" in s.path]
    assert len(pages) == 3 and "cursor=100" in pages[1].path
    few = list(admin.versions(limit=3))
    assert [v.version for v in few] == [250, 249, 248]
    assert admin.revert(7) == state.Written(version=251, held=False)
    assert admin.get() == {"n": 7}


def test_a_revert_to_a_missing_version_shows_the_field_error(fake: FakeEngine, server: TestServer) -> None:
    admin = state.client("orders", url=server.url, token=ADMIN)
    with pytest.raises(jobdock.ApiError) as err:
        admin.revert(99)
    assert err.value.status == 422 and err.value.errors == [{"field": "version", "message": "no version 99"}]
    assert "no such version (version: no version 99)" in str(err.value)


def test_a_run_token_cannot_reach_another_job(in_run: FakeEngine, server: TestServer) -> None:
    other = state.client("payroll")
    with pytest.raises(jobdock.ApiError) as err:
        other.get()
    assert err.value.status == 403 and "only its own job" in str(err.value)


def test_transient_failures_are_retried(in_run: FakeEngine, server: TestServer, no_sleep: list[float]) -> None:
    calls = {"n": 0}

    def flaky(seen: Seen) -> Reply:
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(503, {"title": "Service Unavailable"})
        if calls["n"] == 2:
            return Reply(429, {"title": "Too Many Requests"}, headers={"Retry-After": "2"})
        return in_run(seen)

    server.handler = flaky
    assert state.set({"a": 1}).held
    assert calls["n"] == 3 and no_sleep[1] == 2.0


def test_an_unreachable_engine_fails_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, server: TestServer, no_sleep: list[float]
) -> None:
    server.handler = lambda seen: Reply(200, {}, delay=3.0)
    client = state.client("orders", url=server.url, token=ADMIN, timeout=0.2, retry=Retry(attempts=2))
    started = time.monotonic()
    with pytest.raises(jobdock.HttpError, match="timed out"):
        client.get()
    assert time.monotonic() - started < 2.0  # two answers would take 6 s


def test_the_token_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, server: TestServer, capsys: pytest.CaptureFixture[str],
    no_sleep: list[float],
) -> None:
    bad = "jd_run_token_that_is_dead_000"
    client = state.client("orders", url=server.url, token=bad)
    assert bad not in repr(client) and "***" in repr(client)
    server.handler = lambda seen: Reply(503, {"detail": f"echoing {seen.headers.get('Authorization')}"})
    with pytest.raises(jobdock.ApiError) as err:
        client.get()
    server.handler = lambda seen: Reply(401, {"title": "Unauthorized", "detail": "unknown token"})
    with pytest.raises(jobdock.ApiError) as err401:
        client.set({"x": 1})
    assert "dead once its run has ended" in str(err401.value)
    out = capsys.readouterr()
    for text in (str(err.value), str(err401.value), out.out, out.err):
        assert bad not in text
    assert "retrying" in out.out  # the retries were logged, without the token


def test_set_wants_a_json_object(fake: FakeEngine, server: TestServer) -> None:
    admin = state.client("orders", url=server.url, token=ADMIN)
    with pytest.raises(TypeError, match="JSON object"):
        admin.set([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        admin.set({"x": float("nan")})
    assert server.seen == []


def test_an_etag_that_is_no_version(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {}, headers={"ETag": '"abc"'})
    with pytest.raises(jobdock.ApiError, match="ETag"):
        state.client("orders", url=server.url, token=ADMIN).read()


def test_a_job_name_is_quoted_in_the_path(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"ok": 1}, headers={"ETag": 'W/"5"'})
    assert state.client("a b/c", url=server.url + "/", token=ADMIN).read() == state.Snapshot({"ok": 1}, 5)
    assert server.seen[0].path == "/api/v1/jobs/a%20b%2Fc/state"
