"""The SDK inside real runs of a live engine: a container with Python and this working
tree's SDK (python_image.py) reads its configuration and secrets as the engine delivers them
(environment, /run/secrets), writes log and progress lines the engine records, and, with
`network: none`, learns at once that the engine is out of reach. With the engine's state
API (marker engine_state) a run keeps state through the run token: held until the run
succeeds, or committed on the way."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from conftest import unique
from jobdock import state
from jobdock_live import Engine
from python_image import sdk_image

pytestmark = pytest.mark.engine

BASIC = textwrap.dedent("""
    import json, os, jobdock
    from jobdock import log
    batch = jobdock.config("BATCH", cast=int)
    password = jobdock.secret("ERP_PASSWORD")
    log.info("configured", batch=batch, password=password)
    for i in range(1, 4):
        jobdock.progress(i, 3, f"step {i}", force=True)
    jobdock.heartbeat()
    try:
        jobdock.secret("NOT_SET")
    except jobdock.MissingSecret as err:
        print("missing:", err)
    run = jobdock.current_run()
    print("run:", json.dumps({"id": run.id, "job": run.job, "attempt": run.attempt,
                              "length": len(password),
                              "as_file": os.path.exists("/run/secrets/ERP_PASSWORD"),
                              "in_env": "ERP_PASSWORD" in os.environ}))
""")

OFFLINE = textwrap.dedent("""
    import time, jobdock
    started = time.monotonic()
    try:
        jobdock.state.get()
        print("reached the engine?!")
    except jobdock.EngineUnavailable as err:
        print(f"unavailable after {time.monotonic() - started:.3f}s: {err}")
""")

COUNTER = textwrap.dedent("""
    import sys, jobdock
    from jobdock import state
    before = state.get()
    written = state.set({"count": before.get("count", 0) + 1})
    print("held:", written.held, "seen:", state.get())
    if jobdock.config("COMMIT", default=False, cast=bool):
        print("committed:", state.commit())
    sys.exit(jobdock.config("EXIT", default=0, cast=int))
""")

PASSWORD = "pw-Zq8-container-secret"


@pytest.fixture(scope="module")
def image(live_engine: Engine) -> str:
    return sdk_image()


def make_job(jd: Engine, image: str, script: str, **spec: Any) -> str:
    name = unique("sdk")
    status, _, body = jd.request("POST", "/api/v1/jobs", {
        "name": name, "image": image, "command": ["python3", "-c", script], **spec})
    assert status == 201, f"creating job {name}: {status} {body}"
    return name


def run(jd: Engine, job: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    status, _, body = jd.request("POST", f"/api/v1/jobs/{job}/runs", {"env": env or {}})
    assert status == 201, f"starting {job}: {status} {body}"
    final = jd.wait_final(body["id"])
    status, _, log = jd.request("GET", f"/api/v1/runs/{body['id']}/logs")
    assert status == 200, f"logs of {body['id']}: {status}"
    return final, log if isinstance(log, str) else json.dumps(log)


def events(jd: Engine, run_id: str) -> list[dict[str, Any]]:
    status, _, body = jd.request("GET", f"/api/v1/runs/{run_id}/events")
    assert status == 200
    return body["items"]


def line_after(log: str, prefix: str) -> str:
    for line in log.splitlines():
        at = line.find(prefix)
        if at >= 0:
            return line[at + len(prefix):].strip()
    raise AssertionError(f"no line with {prefix!r} in:\n{log}")


@pytest.mark.parametrize("delivery", ["env", "files"])
def test_config_secrets_logs_and_progress(live_engine: Engine, image: str, delivery: str) -> None:
    job = make_job(live_engine, image, BASIC, env={"BATCH": "250"},
                   secrets={"ERP_PASSWORD": PASSWORD}, secret_delivery=delivery)
    final, log = run(live_engine, job)
    assert final["status"] == "succeeded", log
    assert PASSWORD not in log
    assert "level=info msg=configured batch=250 password=***" in log
    for i in (1, 2, 3):
        assert f"::jobdock::progress {i}/3 step {i}" in log
    assert "::jobdock::heartbeat" in log
    facts = json.loads(line_after(log, "run:"))
    assert facts == {"id": final["id"], "job": job, "attempt": 1, "length": len(PASSWORD),
                     "as_file": delivery == "files", "in_env": delivery == "env"}
    assert f"jobdock secrets set {job} NOT_SET" in line_after(log, "missing:")
    progress = [e for e in events(live_engine, final["id"]) if e["kind"] == "progress"]
    assert progress, events(live_engine, final["id"])
    assert "3/3 step 3" in json.dumps(progress[-1])


def test_without_a_network_the_state_api_fails_at_once(live_engine: Engine, image: str) -> None:
    job = make_job(live_engine, image, OFFLINE, network="none")
    final, log = run(live_engine, job)
    assert final["status"] == "succeeded", log
    said = line_after(log, "unavailable after")
    assert "JOBDOCK_URL is not set" in said and "network: none" in said
    assert float(said.split("s:", 1)[0]) < 0.5


@pytest.mark.engine_state
@pytest.mark.parametrize("delivery", ["env", "files"])
def test_a_runs_state_is_held_until_it_succeeds_or_commits(
    state_engine: Engine, image: str, delivery: str
) -> None:
    # The default network: the engine gives the run its address on Docker's bridge. With
    # files, the run token arrives as /run/secrets/JOBDOCK_RUN_TOKEN.
    job = make_job(state_engine, image, COUNTER, secret_delivery=delivery)
    admin = state.client(job, url=state_engine.url, token=state_engine.token)

    final, log = run(state_engine, job)
    assert final["status"] == "succeeded", log
    assert "held: True seen: {'count': 1}" in log
    assert admin.get() == {"count": 1}

    final, log = run(state_engine, job, {"EXIT": "3"})
    assert final["status"] == "failed", log
    assert "seen: {'count': 2}" in log
    assert admin.get() == {"count": 1}  # a failed run moves nothing

    final, log = run(state_engine, job, {"EXIT": "3", "COMMIT": "true"})
    assert final["status"] == "failed", log
    assert "committed:" in log
    assert admin.get() == {"count": 2}  # committed before it failed

    final, log = run(state_engine, job)
    assert final["status"] == "succeeded", log
    assert admin.get() == {"count": 3}
    assert [v.state["count"] for v in admin.versions()] == [3, 2, 1]
