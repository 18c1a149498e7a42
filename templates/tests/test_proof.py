"""From `jobdock init` to runs that keep a bookmark, as a script author works: the template's
image is built for real (on a Debian Python base made here, with this checkout's SDK),
deployed, given its secret, and run against a REST source served by this test. Checked:
the secret was read; the second run resumed from the first run's bookmark; a failed run did
not move it; a revert works; progress showed on the run; the logs are in the engine."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import images
from jobdock_live import binary_from_env, engine

TOKEN = "src-t0k3n-" + os.urandom(6).hex()


class Source:
    """A REST source: `GET /records?since=…` answers `{"items": [...], "next": null}`, for
    callers with the right bearer token; it records what it was asked, and fails on demand."""

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
                    return self._send(400, {"error": "the source refuses today"})
                items = [r for r in source.records if since is None or r["updated_at"] > since]
                self._send(200, {"items": items, "next": None})

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
        self.url = f"http://{images.bridge_gateway()}:{self.server.server_port}/"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def base_image() -> str:
    return images.jobdock_python()


def test_init_deploy_and_runs_that_keep_their_bookmark(tmp_path: Path, base_image: str) -> None:
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
                    cwd=tmp_path, timeout=600,
                    env={**os.environ, "JOBDOCK_URL": jd.url, "JOBDOCK_TOKEN": jd.token},
                )
                if ok:
                    assert out.returncode == 0, f"jobdock {args}: {out.stdout}\n{out.stderr}"
                return out

            cli("init", "orders-sync")
            project = tmp_path / "orders-sync"
            # As a user would: point the job at their source.
            job = project / "job.yaml"
            job.write_text(job.read_text().replace("https://api.example.com/", source.url))

            out = cli("deploy", str(project), "--build-arg", f"BASE={base_image}")
            assert "secret SOURCE_TOKEN is not set" in out.stderr, out.stderr
            image = out.stdout.strip()
            cli("secrets", "set", "orders-sync", "SOURCE_TOKEN", stdin=TOKEN + "\n")

            def run(expect_ok: bool = True) -> dict:
                out = cli("run", "orders-sync", "--wait", "-o", "json", ok=False)
                assert (out.returncode == 0) == expect_ok, f"{out.stdout}\n{out.stderr}"
                return json.loads(out.stdout)

            def bookmark() -> dict:
                status, headers, body = jd.request("GET", "/api/v1/jobs/orders-sync/state")
                assert status == 200, body
                return body

            # First run: everything, with the secret.
            first = run()
            assert first["status"] == "succeeded"
            assert source.asked[-1] == {"path": "/records", "since": None,
                                        "auth": f"Bearer {TOKEN}"}
            assert bookmark() == {"since": "2026-12-02T08:00:00Z"}
            assert first["progress"]["done"] == 2 and first["progress"]["total"] == 2

            # Second run: only what is new, from the first run's bookmark.
            source.records.append({"id": 3, "updated_at": "2026-12-03T08:00:00Z"})
            second = run()
            assert source.asked[-1]["since"] == "2026-12-02T08:00:00Z"
            assert bookmark() == {"since": "2026-12-03T08:00:00Z"}
            assert second["progress"]["done"] == 1

            # A failed run leaves the bookmark where it was.
            source.fail = True
            source.records.append({"id": 4, "updated_at": "2026-12-04T08:00:00Z"})
            failed = run(expect_ok=False)
            assert failed["status"] == "failed" and failed["exit_code"] == 2
            assert bookmark() == {"since": "2026-12-03T08:00:00Z"}

            # A revert puts the first bookmark back; the next run starts from there.
            versions = json.loads(cli("state", "versions", "orders-sync", "-o", "json").stdout)
            first_version = min(v["version"] for v in versions["items"])
            cli("state", "revert", "orders-sync", str(first_version))
            assert bookmark() == {"since": "2026-12-02T08:00:00Z"}
            source.fail = False
            run()
            assert source.asked[-1]["since"] == "2026-12-02T08:00:00Z"

            # The logs are in the engine: the script's structured lines, never the secret.
            log = cli("logs", first["id"]).stdout
            assert "level=info msg=starting" in log, log
            assert "::jobdock::progress 2/2 records" in log, log
            failed_log = cli("logs", failed["id"]).stdout
            assert "level=error" in failed_log and "400" in failed_log, failed_log
            for text in (log, failed_log, jd.log()):
                assert TOKEN not in text
            assert image.startswith("orders-sync:")
    finally:
        source.stop()
