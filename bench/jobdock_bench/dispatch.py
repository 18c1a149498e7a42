"""Dispatch at scale: BENCH_DISPATCH_RUNS runs (default 5,000) of a container running `true`,
triggered at once over 50 jobs that share 25 locks (capacity 4 each), with the Docker
backend's cap raised so that it is not the limit. Jobdock's side: trigger of the first to
end of the last, and the engine's CPU per run. The best possible side, measured just after:
the same number of containers through sixteen parallel `docker run -d --rm` loops, until the
last is gone (the daemon's own ceiling)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import IMAGE, Binaries, Row, api, cpu_ms, engine, log

GOAL = ">= 0.9x sixteen docker run -d loops; engine CPU per run <= 5 ms"
JOBS = 50
LOCKS = 25
LOOPS = 16
LABEL = "dev.jobdock.bench=dispatch"


def finished(base: str) -> int:
    """Runs of the bench's jobs that have ended, from the engine's metrics."""
    text = api(f"{base}/metrics").decode()
    return sum(int(float(m.group(1))) for m in re.finditer(
        r'^jobdock_runs_finished_total\{[^}]*job="bench-dispatch-\d+"[^}]*\} (\S+)$', text,
        re.M))


def through_jobdock(bins: Binaries, work: Path, n: int) -> dict:
    env = {"JOBDOCK_MAX_RUNNING": "docker=1000"}
    with engine(bins.engine, work, env=env) as e:
        base = f"http://{e.addr}"
        for k in range(LOCKS):
            api(f"{base}/api/v1/locks/bench-src-{k}", "PUT", {"capacity": 4})
        for k in range(JOBS):
            api(f"{base}/api/v1/jobs", "POST", {
                "name": f"bench-dispatch-{k}", "image": IMAGE, "command": ["true"],
                "lock_keys": [f"bench-src-{k % LOCKS}"], "max_queued": 100_000})
        c0, t0 = cpu_ms(e.pid), time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: api(f"{base}/api/v1/jobs/bench-dispatch-{i % JOBS}/runs",
                                        "POST", {}), range(n)))
        triggered = time.monotonic() - t0
        while (done := finished(base)) < n:
            if time.monotonic() - t0 > 3600:
                raise RuntimeError(f"only {done} of {n} runs ended within an hour")
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        cpu = cpu_ms(e.pid) - c0
        failed = api(f"{base}/api/v1/runs?status=failed&limit=1")["items"]
        lost = api(f"{base}/api/v1/runs?status=lost&limit=1")["items"]
        if failed or lost:
            raise RuntimeError(f"runs did not succeed: {failed or lost}")
    return {"seconds": round(seconds, 1), "trigger_seconds": round(triggered, 1),
            "engine_cpu_ms_per_run": round(cpu / n, 2)}


def through_docker(n: int) -> dict:
    left = iter(range(n))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            subprocess.run(["docker", "run", "-d", "--rm", "--label", LABEL, IMAGE, "true"],
                           check=True, capture_output=True)

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(LOOPS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
                         capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)
    return {"seconds": round(time.monotonic() - t0, 1)}


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_DISPATCH_RUNS", "5000"))
    log(f"{n:,} runs through Jobdock")
    ours = through_jobdock(bins, work, n)
    log(f"{n:,} containers through {LOOPS} docker run loops")
    theirs = through_docker(n)
    ours_rate, their_rate = n / ours["seconds"], n / theirs["seconds"]
    return [Row(
        f"dispatch, {n:,} runs over {JOBS} jobs",
        f"{ours_rate:.1f} finished/s, CPU {ours['engine_cpu_ms_per_run']} ms/run",
        f"{their_rate:.1f}/s ({LOOPS} docker run -d loops)",
        round(ours_rate / their_rate, 3), GOAL, {"runs": n, "jobdock": ours, "docker": theirs},
    )]
