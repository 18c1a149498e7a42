"""What the figures share: building and starting the binaries, the test image, HTTP calls
to the engine, a process's CPU time and peak memory, and `wrk`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "bench-admin-token-0123456789abcdef"
IMAGE = "jobdock-test/busybox:1"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Binaries:
    engine: Path
    baseline: Path


@dataclass
class Row:
    """One figure: Jobdock's side, the best possible side measured in the same run, their
    ratio (None where the figure is a single quantity) and the goal."""

    figure: str
    jobdock: str
    baseline: str
    ratio: Optional[float]
    goal: str
    details: dict[str, Any] = field(default_factory=dict)


def build() -> Binaries:
    """The release binaries; JOBDOCK_BIN names an engine binary to measure instead of
    building one (e.g. an older build, to compare)."""
    given = os.environ.get("JOBDOCK_BIN")
    packages = ["jobdock-bench-baseline"] + ([] if given else ["jobdock-engine"])
    log(f"building {', '.join(packages)} (release)")
    subprocess.run(
        ["cargo", "build", "--release", *(a for p in packages for a in ("-p", p))],
        cwd=ROOT, check=True,
    )
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    release = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    return Binaries(Path(given) if given else release / "jobdock",
                    release / "jobdock-bench-baseline")


def ensure_image() -> None:
    """The busybox test image, built as tests/support/src/images.rs builds it: the host's
    static busybox in a fresh root filesystem, imported under a temporary tag that then
    moves to the shared one (no registry is reachable)."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    log(f"building {IMAGE} from /bin/busybox")
    with tempfile.TemporaryDirectory() as root:
        r = Path(root)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "tmp").chmod(0o1777)
        (r / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
        (r / "bin" / "busybox").chmod(0o755)
        applets = subprocess.run(["/bin/busybox", "--list-full"], check=True,
                                 capture_output=True, text=True).stdout.split()
        for applet in applets:
            link = r / applet
            if not link.exists() and not link.is_symlink():
                link.symlink_to("/bin/busybox")
        (r / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        (r / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        temp_tag = f"jobdock-test/busybox:build-bench-{os.getpid()}"
        tar = subprocess.Popen(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", root,
                                "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", temp_tag],
                       stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        subprocess.run(["docker", "tag", temp_tag, IMAGE], check=True)
    subprocess.run(["docker", "rmi", temp_tag], check=True, capture_output=True)


class Process:
    """A child in a process group of its own, stopped by that group; `addr` is what the first
    group of `pattern` matched on its output (e.g. the address it announced), awaited for up
    to `timeout` seconds."""

    def __init__(self, argv: list[str], env: dict[str, str], pattern: str, log_path: Path,
                 timeout: float = 60):
        self.out = open(log_path, "w")
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self.out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=0,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, log_path.read_text())
            if m:
                self.addr = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{' '.join(argv[:2])} did not print {pattern!r}: "
                           f"{log_path.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def engine(binary: Path, work: Path, database_url: Optional[str] = None,
           args: tuple[str, ...] = (), data: Optional[Path] = None,
           env: Optional[dict[str, str]] = None) -> Process:
    """`jobdock serve` on a free loopback port, on `data` (a fresh data directory when
    None)."""
    # Requests are traced at debug level: info costs nothing per request.
    env = {"JOBDOCK_ADMIN_TOKEN": TOKEN, "JOBDOCK_LOG": "info", "JOBDOCK_LOG_FORMAT": "json",
           **(env or {})}
    if database_url:
        # Replicas on PostgreSQL share a master key: the engine asks for one there.
        key = subprocess.run([str(binary), "keys", "generate"], check=True,
                             capture_output=True, text=True).stdout.strip()
        env |= {"DATABASE_URL": database_url, "JOBDOCK_MASTER_KEY": key}
    data = data or Path(tempfile.mkdtemp(prefix="data-", dir=work))
    log_path = data / "engine.log"
    if log_path.exists():
        log_path.rename(data / f"engine.{int(time.time() * 1000)}.log")
    return Process(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), *args],
        env, r'"addr":"(127\.0\.0\.1:\d+)"', log_path,
    )


def api(url: str, method: str = "GET", body: Optional[dict] = None, timeout: float = 90) -> Any:
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = r.read()
    return json.loads(data) if data[:1] in (b"{", b"[") else data


def run_to_end(base: str, job: str) -> dict:
    """Triggers `job` and long-polls its run until it has ended."""
    run = api(f"{base}/api/v1/jobs/{job}/runs", "POST", {})
    while run["status"] in ("queued", "starting", "running"):
        run = api(f"{base}/api/v1/runs/{run['id']}?wait_seconds=60")
    return run


def running_run(base: str, job: str) -> dict:
    """Triggers `job` and waits until its run is running."""
    run = api(f"{base}/api/v1/jobs/{job}/runs", "POST", {})
    while run["status"] != "running":
        time.sleep(0.2)
        run = api(f"{base}/api/v1/runs/{run['id']}")
    return run


def timed_run(base: str, job: str) -> float:
    """Trigger->finished of a run of `job` through the engine at `base`, in ms; a run that
    does not succeed raises."""
    t0 = time.monotonic()
    run = run_to_end(base, job)
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run['id']} ended {run['status']}: {run}")
    return (time.monotonic() - t0) * 1000


def timed_docker_run() -> float:
    """`docker run --rm` of the test image running `true`, in ms."""
    t0 = time.monotonic()
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True)
    return (time.monotonic() - t0) * 1000


@dataclass
class Interleaved:
    """Both sides' times (ms) and the engine's CPU: per run of its own, and per second while
    the other side ran (its background loops')."""

    ours: list[float]
    theirs: list[float]
    engine_cpu_ms_per_run: float
    engine_cpu_ms_per_idle_s: Optional[float]


def interleaved(pid: int, n: int, ours: Callable[[], float],
                theirs: Callable[[], float]) -> Interleaved:
    """One warm-up of each (not counted), then `n` of each in turn, so that both see the same
    load; each callable returns its time in ms. `pid` is the engine's."""
    log("warming up (one run of each, not counted)")
    ours()
    theirs()
    log(f"{n} runs of each, interleaved")
    got = Interleaved([], [], 0.0, None)
    run_cpu = idle_cpu = idle_s = 0.0
    for _ in range(n):
        c0 = cpu_ms(pid)
        got.ours.append(ours())
        c1, t1 = cpu_ms(pid), time.monotonic()
        got.theirs.append(theirs())
        # While the other side runs, the engine idles: its CPU then is its background loops'.
        idle_cpu += cpu_ms(pid) - c1
        idle_s += time.monotonic() - t1
        run_cpu += c1 - c0
    got.engine_cpu_ms_per_run = round(run_cpu / n, 2)
    got.engine_cpu_ms_per_idle_s = round(idle_cpu / idle_s, 2) if idle_s else None
    return got


def cpu_ms(pid: int) -> float:
    """utime+stime of a process so far, in ms (fields 14 and 15 of /proc/PID/stat, counted
    after the command name, which may hold spaces)."""
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS")


def wrk(url: str, connections: int = 32, seconds: int = 8,
        script: Optional[Path] = None) -> dict:
    """Requests/s and p99 of `wrk` on `url`; `script` is a Lua script of wrk's (e.g. for a
    POST)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {TOKEN}", *(["-s", str(script)] if script else []),
         url],
        check=True, capture_output=True, text=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk got {errors.group(1)} failed answers from {url}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"requests_per_s": round(rps), "p99_ms": round(float(p99.group(1)) * scale, 2)}
