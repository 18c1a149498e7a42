"""A live Jobdock engine and a local test image, for the Python test suites.

The Python suites (the Airflow provider, the Data Factory templates, the SDK) drive a real
`jobdock serve` process that runs real containers, as the Rust end-to-end tests do
(`tests/support/src/app.rs`). This module is their shared fixture:

    with engine(binary) as jd:
        jd.put_job("hello", {"image": busybox_image(), "command": ["sh", "-c", "echo hi"]})
        ...

The engine runs in a process group of its own and is stopped by that group, never by a
pattern.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

# The same reference the Rust tests build (tests/support/src/images.rs), so either side builds
# it once per machine and the other reuses it.
BUSYBOX_IMAGE = "jobdock-test/busybox:1"


def binary_from_env() -> str:
    """The engine binary under test: `JOBDOCK_BIN`, else the workspace's debug build."""
    explicit = os.environ.get("JOBDOCK_BIN")
    if explicit:
        return explicit
    root = Path(__file__).resolve().parents[3]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    return str(target / "debug" / "jobdock")


@dataclass
class Engine:
    """A running engine: its base URL, the bootstrap admin token and its log file."""

    url: str
    token: str
    log_path: Path
    data_dir: Path
    process: subprocess.Popen = field(repr=False)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP call with the admin token (or `token`); returns status, headers and the
        decoded JSON body (or the text, or None). Never raises on an HTTP status."""
        url = path if path.startswith("http") else self.url + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if token is not False:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=90) as resp:
                return resp.status, dict(resp.headers), _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), _decode(err.read())

    def put_job(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        status, _, body = self.request("PUT", f"/api/v1/jobs/{name}", spec)
        if status not in (200, 201):
            raise AssertionError(f"PUT job {name}: {status} {body}")
        return body

    def wait_final(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """Long-polls a run until it reaches a final status."""
        deadline = time.monotonic() + timeout
        while True:
            status, _, run = self.request("GET", f"/api/v1/runs/{run_id}?wait_seconds=20")
            if status != 200:
                raise AssertionError(f"GET run {run_id}: {status} {run}")
            if run["status"] in FINAL_STATUSES:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


FINAL_STATUSES = {"succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"}


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@contextlib.contextmanager
def engine(
    binary: str | None = None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Iterator[Engine]:
    """Starts `jobdock serve` on a free loopback port with a fresh embedded store, waits until
    it listens, and stops its process group on exit. Fails with the engine's log when it
    does not start or when it panicked."""
    binary = binary or binary_from_env()
    work = Path(tempfile.mkdtemp(prefix="jobdock-live-"))
    token = "jd_test_" + secrets.token_hex(16)
    log_path = work / "engine.log"
    full_env = {
        **os.environ,
        "JOBDOCK_ADMIN_TOKEN": token,
        "JOBDOCK_DATA_DIR": str(work / "data"),
        "JOBDOCK_LOG_FORMAT": "text",
        **(env or {}),
    }
    full_env.pop("DATABASE_URL", None)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", *(args or [])],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    live: Engine | None = None
    ended = False
    try:
        url = _wait_listening(process, log_path)
        live = Engine(url=url, token=token, log_path=log_path, data_dir=work / "data", process=process)
        yield live
        if process.poll() is None:
            _end_unfinished_runs(live)
            ended = True
            _assert_no_containers_left(log_path)
        text = log_path.read_text(errors="replace")
        if "panicked" in text:
            raise AssertionError(f"the engine panicked:\n{text[-4000:]}")
    finally:
        if live is not None and not ended and process.poll() is None:
            # An engine that no longer answers has nothing to say about its runs.
            with contextlib.suppress(OSError):
                _end_unfinished_runs(live)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def _end_unfinished_runs(live: Engine, within: float = 30.0) -> None:
    """Cancels the runs still queued, starting or running and waits for their ends. An engine
    stopped with a run going leaves its container for its next start to adopt, and no engine
    starts again on this temporary store: without this, a test that ended before its run did
    left a container behind on the daemon."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        going = []
        for status in ("queued", "starting", "running"):
            code, _, body = live.request("GET", f"/api/v1/runs?status={status}&limit=500")
            if code != 200:
                return
            going += body["items"]
        if not going:
            return
        for run in going:
            live.request("POST", f"/api/v1/runs/{run['id']}/cancel")
        time.sleep(0.5)


def _assert_no_containers_left(log_path: Path) -> None:
    """Fails (removing them) when containers of this engine's installation are still on the
    daemon although none of its runs is going: an ended run's container is removed before the
    run is reported final."""
    found = re.search(r"installation[=:]\s*\"?([0-9a-f-]{36})", log_path.read_text(errors="replace"))
    if not found:
        raise AssertionError("the engine did not log its installation id")
    label = f"label=dev.jobdock.installation={found.group(1)}"
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], check=True, capture_output=True, text=True
    ).stdout.split()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        raise AssertionError(f"containers left on the daemon after every run ended: {left}")


def _wait_listening(process: subprocess.Popen, log_path: Path) -> str:
    pattern = re.compile(r"listening \(http\) addr=([0-9.:]+)")
    for _ in range(300):
        text = log_path.read_text(errors="replace")
        found = pattern.search(text)
        if found:
            return f"http://{found.group(1)}"
        if process.poll() is not None:
            raise AssertionError(f"the engine exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    raise AssertionError(f"the engine did not start listening:\n{log_path.read_text()}")


def busybox_image() -> str:
    """The reference of a local busybox image, built from Debian's `busybox-static` with
    `docker import` when the daemon lacks it (no registry is reachable here).

    This mirrors `busybox_image()` of tests/support/src/images.rs so that a Python suite can
    run on its own; both build the same reference."""
    if _image_exists(BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise AssertionError("/bin/busybox is missing: install Debian's busybox-static")
    temp_tag = f"jobdock-test/busybox:build-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory() as root_dir:
        root = Path(root_dir)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy(busybox, root / "bin/busybox")
        (root / "bin/busybox").chmod(0o755)
        applets = subprocess.run(
            [str(busybox), "--list-full"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in applets:
            applet = applet.strip("/")
            link = root / applet
            if applet == "bin/busybox" or ".." in applet or link.exists():
                continue
            link.symlink_to("/bin/busybox")
        (root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        )
        (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        archive = root.parent / f"{root.name}.tar"
        with tarfile.open(archive, "w") as tar:

            def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                return info

            tar.add(root, arcname=".", filter=as_root)
        try:
            subprocess.run(
                ["docker", "import", "--change", 'CMD ["/bin/sh"]', str(archive), temp_tag],
                check=True,
                capture_output=True,
            )
        finally:
            archive.unlink(missing_ok=True)
    if not _image_exists(BUSYBOX_IMAGE):
        subprocess.run(["docker", "tag", temp_tag, BUSYBOX_IMAGE], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", temp_tag], check=False, capture_output=True)
    return BUSYBOX_IMAGE


def _image_exists(reference: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", reference], capture_output=True
        ).returncode
        == 0
    )
