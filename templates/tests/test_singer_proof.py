"""The Singer template with real published connectors: `jobdock init --template singer`, the
image built for real with tap-rest-api-msdk and target-jsonl from PyPI (their wheels built
on the host first, since containers here reach no package index), deployed, given its
secret, and run against a REST source served by this test. Checked: the tap was asked with
the secret and, on the second run, from the first run's bookmark; target-jsonl wrote every
record the first time and only the new ones the second (the job prints the file it wrote);
the job's state is the target's last STATE; a failed run (the source answers 500) leaves it
as it was and says which process failed; no secret in any log."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import images
from jobdock_live import binary_from_env, engine

TOKEN = "src-t0k3n-" + os.urandom(6).hex()
TEMPLATE = images.REPO / "templates/singer-job"
PINS = [TEMPLATE / "tap-requirements.txt", TEMPLATE / "target-requirements.txt"]
# target-jsonl writes <stream>.jsonl there (TARGET_CONFIG in the template's job.yaml); the
# job prints it after the pipeline, so that what the target wrote is in the run's log.
COMMAND = ["sh", "-c", "python3 -m jobdock.singer && cat /tmp/singer-out/records.jsonl"]


def _instant(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


class Source:
    """A REST source: `GET /records?since=…` answers `{"items": [...]}` with the records
    updated after `since`, for callers with the right bearer token; it records what it was
    asked, and answers 500 on demand."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.asked: list[dict] = []
        self.fail = False
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                since = parse_qs(url.query).get("since", [None])[0]
                source.asked.append({"path": url.path, "since": since,
                                     "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": "bad token"})
                if source.fail:
                    return self._send(500, {"error": "the source is down"})
                items = [r for r in source.records
                         if since is None or _instant(r["updated_at"]) > _instant(since)]
                self._send(200, {"items": items})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        # Every address: the containers reach it on Docker's bridge.
        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{images.bridge_gateway()}:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()


def connector_wheels() -> Path:
    """The wheels of the template's pinned connectors and all they need, built on the host
    (CPython 3.11 on x86_64 glibc, as the image) once per set of pins, outside the clone."""
    digest = hashlib.sha256(sys.version.encode())
    for pins in PINS:
        digest.update(pins.read_bytes())
    cache = Path(os.environ.get("JOBDOCK_WHEEL_CACHE", Path.home() / ".cache/jobdock-wheels"))
    folder = cache / digest.hexdigest()[:16]
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for pins in PINS:  # one at a time: the tap's and the target's pins conflict
        out = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet",
             "-w", str(folder), "-r", str(pins)],
            capture_output=True, text=True, timeout=1200,
        )
        if out.returncode != 0:
            raise AssertionError(f"pip wheel -r {pins.name} failed:\n{out.stdout}\n{out.stderr}")
    (folder / ".complete").touch()
    return folder


def written(log: str) -> list[dict]:
    """The records target-jsonl wrote, as the job printed them in its log."""
    found = []
    for line in log.splitlines():
        start = line.find('{"')
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict) and "id" in value and "updated_at" in value and "type" not in value:
            found.append(value)
    return found


@pytest.fixture(scope="module")
def base_image() -> str:
    return images.jobdock_python()


def test_a_singer_pipeline_of_published_connectors_keeps_its_state(
    tmp_path: Path, base_image: str
) -> None:
    wheels = connector_wheels()
    source = Source()
    source.records = [
        {"id": 1, "updated_at": "2026-12-01T08:00:00Z"},
        {"id": 2, "updated_at": "2026-12-02T08:00:00Z"},
    ]
    try:
        with engine() as jd:
            def cli(*args: str, stdin: str | None = None, ok: bool = True):
                out = subprocess.run(
                    [binary_from_env(), *args], input=stdin, capture_output=True, text=True,
                    cwd=tmp_path, timeout=1200,
                    env={**os.environ, "JOBDOCK_URL": jd.url, "JOBDOCK_TOKEN": jd.token},
                )
                if ok:
                    assert out.returncode == 0, f"jobdock {args}: {out.stdout}\n{out.stderr}"
                return out

            out = cli("init", "--template", "singer", "crm-sync")
            assert "a Singer pipeline job named crm-sync" in out.stderr, out.stderr
            project = tmp_path / "crm-sync"
            # As a user would: point the tap at their source; here the job also prints what
            # the target wrote.
            job = project / "job.yaml"
            text = job.read_text()
            assert "https://api.example.com" in text
            job.write_text(text.replace("https://api.example.com", source.url)
                           + f"command: {json.dumps(COMMAND)}\n")
            for wheel in wheels.glob("*.whl"):
                shutil.copy(wheel, project / "wheels")

            out = cli("deploy", str(project), "--build-arg", f"BASE={base_image}")
            assert "secret SOURCE_TOKEN is not set" in out.stderr, out.stderr
            cli("secrets", "set", "crm-sync", "SOURCE_TOKEN", stdin=TOKEN + "\n")

            def run(expect_ok: bool = True) -> dict:
                out = cli("run", "crm-sync", "--wait", "-o", "json", ok=False)
                run = json.loads(out.stdout)
                assert (out.returncode == 0) == expect_ok, (
                    f"{out.stdout}\n{out.stderr}\n{cli('logs', run['id'], ok=False).stdout}")
                return run

            def state() -> dict:
                status, _, body = jd.request("GET", "/api/v1/jobs/crm-sync/state")
                assert status == 200, body
                return body or {}

            def bookmark() -> str:
                return state()["bookmarks"]["records"]["replication_key_value"]

            # First run: from the configured start_date, every record, with the secret.
            first = run()
            assert first["status"] == "succeeded"
            asked = [a for a in source.asked if a["path"] == "/records"]
            assert asked and all(a["auth"] == f"Bearer {TOKEN}" for a in asked), asked
            assert asked[-1]["since"].startswith("2026-01-01T00:00:00"), asked
            log = cli("logs", first["id"]).stdout
            assert [r["id"] for r in written(log)] == [1, 2], log
            assert _instant(bookmark()) == _instant("2026-12-02T08:00:00Z"), state()
            assert first["progress"]["done"] == 2, first["progress"]

            # Second run: the tap is asked from the bookmark; only the new record is loaded.
            source.records.append({"id": 3, "updated_at": "2026-12-03T08:00:00Z"})
            before = len(source.asked)
            second = run()
            asked = [a for a in source.asked[before:] if a["path"] == "/records"]
            assert asked and all(_instant(a["since"]) == _instant("2026-12-02T08:00:00Z")
                                 for a in asked), asked
            second_log = cli("logs", second["id"]).stdout
            assert [r["id"] for r in written(second_log)] == [3], second_log
            assert _instant(bookmark()) == _instant("2026-12-03T08:00:00Z"), state()
            assert second["progress"]["done"] == 1, second["progress"]

            # A failed run (the source answers 500) leaves the state as it was.
            kept = state()
            source.fail = True
            source.records.append({"id": 4, "updated_at": "2026-12-04T08:00:00Z"})
            failed = run(expect_ok=False)
            assert failed["status"] == "failed" and failed["exit_code"] == 1, failed
            assert state() == kept
            failed_log = cli("logs", failed["id"]).stdout
            assert "the tap /opt/tap/bin/tap-rest-api-msdk failed with exit code" in failed_log, failed_log
            assert "the job's state is left as it was" in failed_log
            assert "[tap]" in failed_log and "500" in failed_log, failed_log
            assert written(failed_log) == []

            # The logs: the connectors' stderr, the pipeline's lines, never the secret.
            assert "[tap]" in log and "singer pipeline done" in log, log
            for text in (log, second_log, failed_log, jd.log()):
                assert TOKEN not in text
    finally:
        source.stop()
