"""Many long polls at once: 1,000 connections each holding `GET /api/v1/runs/{id}
?wait_seconds=60` on a run that goes on longer than the measurement. Jobdock's side: the
engine's CPU per second while they wait (once they have arrived); the best possible side:
its CPU per second with the same run going and nobody waiting, measured just before."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .common import IMAGE, TOKEN, Binaries, Row, api, cpu_ms, engine, running_run

GOAL = "no per-waiter database polling: CPU while 1,000 wait close to idle"
WAITERS = 1000
SECONDS = 15
# Seconds given to the 1,000 requests to arrive before the waiting is measured.
ARRIVAL = 5


def measure(bins: Binaries, work: Path) -> list[Row]:
    with engine(bins.engine, work) as e:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-long", "image": IMAGE,
                                             "command": ["sleep", "120"]})
        run = running_run(base, "bench-long")
        c0, t0 = cpu_ms(e.pid), time.monotonic()
        time.sleep(SECONDS)
        idle = (cpu_ms(e.pid) - c0) / (time.monotonic() - t0)
        # The 1,000 requests arrive (each is authenticated and looks at its run once) in
        # the first seconds; the waiting is measured after that, while they are held.
        waiters = subprocess.Popen(
            ["wrk", "-t2", f"-c{WAITERS}", f"-d{ARRIVAL + SECONDS + 2}s", "--timeout", "90s",
             "-H", f"Authorization: Bearer {TOKEN}",
             f"{base}/api/v1/runs/{run['id']}?wait_seconds=60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
        )
        try:
            time.sleep(ARRIVAL)
            c0, t0 = cpu_ms(e.pid), time.monotonic()
            time.sleep(SECONDS)
            waiting = (cpu_ms(e.pid) - c0) / (time.monotonic() - t0)
            waiters.wait(ARRIVAL + SECONDS + 60)
        finally:
            if waiters.poll() is None:
                os.killpg(waiters.pid, signal.SIGKILL)
                waiters.wait()
        api(f"{base}/api/v1/runs/{run['id']}/cancel", "POST", {})
        # Ended, and its container removed, before the engine stops: stopped in between, the
        # engine left the cancelled run's container behind on the daemon.
        while api(f"{base}/api/v1/runs/{run['id']}?wait_seconds=60")["status"] in (
                "queued", "starting", "running"):
            pass
    return [Row(
        f"long polls ({WAITERS} waiting)",
        f"engine CPU {waiting:.1f} ms/s",
        f"{idle:.1f} ms/s with nobody waiting",
        round(waiting / idle, 2) if idle else None, GOAL,
        {"waiters": WAITERS, "seconds": SECONDS, "cpu_ms_per_s_waiting": round(waiting, 2),
         "cpu_ms_per_s_idle": round(idle, 2)},
    )]
