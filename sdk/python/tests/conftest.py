"""Fixtures of the SDK's tests: a clean environment for each test, a scriptable local HTTP
server, a moto S3 server, and a live engine (tests/support/python/jobdock_live.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from jobdock import _redact, protocol
from jobdock_live import Engine, binary_from_env, engine

HERE = Path(__file__).resolve().parent
SDK = HERE.parent
STATE_PATH = "/api/v1/jobs/{name}/state"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No JOBDOCK_* variable from the machine, an empty secrets directory, throttles and
    the masked values reset. Returns the secrets directory."""
    for name in list(os.environ):
        if name.startswith("JOBDOCK_") and name != "JOBDOCK_BIN":
            monkeypatch.delenv(name)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    monkeypatch.setenv("JOBDOCK_SECRETS_DIR", str(secrets_dir))
    protocol._reset()
    _redact.forget_all()
    return secrets_dir


# --- a scriptable HTTP server -------------------------------------------------------------


@dataclass
class Seen:
    """A request the test server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Seen], Reply]


class TestServer:
    """A threaded HTTP server on 127.0.0.1 whose answers come from `handler` (set by the
    test); every request is recorded in `seen`."""

    __test__ = False

    def __init__(self) -> None:
        self.handler: Handler = lambda seen: Reply(404, {"title": "no handler"})
        self.seen: list[Seen] = []
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
                outer.seen.append(seen)
                reply = outer.handler(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, (bytes, bytearray)):
                    data = bytes(reply.body)
                elif reply.body is None:
                    data = b""
                else:
                    data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[TestServer]:
    srv = TestServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries do not wait; the delays they would have waited are recorded."""
    from jobdock import _http

    slept: list[float] = []
    monkeypatch.setattr(_http, "_sleep", slept.append)
    return slept


# --- moto's S3 server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3:
    endpoint: str

    def storage_options(self) -> dict[str, Any]:
        return {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """moto's server on a free loopback port, in a process group of its own, stopped by
    that group."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield S3(endpoint)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- a live engine ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_engine() -> Iterator[Engine]:
    binary = binary_from_env()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no engine binary at {binary}: pass it to sdk/python/tests/run")
    with engine(binary) as jd:
        yield jd


def engine_has_state(jd: Engine) -> bool:
    status, _, doc = jd.request("GET", "/api/v1/openapi.json")
    assert status == 200, f"GET /api/v1/openapi.json: {status}"
    return STATE_PATH in (doc.get("paths") or {})


@pytest.fixture(scope="session")
def state_engine(live_engine: Engine) -> Engine:
    """The live engine, for tests of the state API: skipped (with the reason) only when the
    engine's OpenAPI document has no state path."""
    if not engine_has_state(live_engine):
        pytest.skip(
            f"the engine under test ({binary_from_env()}) has no state API yet: its "
            f"/api/v1/openapi.json lists no {STATE_PATH}"
        )
    return live_engine


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"
