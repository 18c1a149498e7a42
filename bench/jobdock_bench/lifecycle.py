"""A run's whole life: trigger→finished of a container running `true` through Jobdock (a
POST, then long polls) against `docker run --rm` of the same image, interleaved so that both
see the same load; and the engine's own CPU per run and while idle (utime+stime from /proc).

BENCH_RUNS sets how many runs of each (default 20)."""

from __future__ import annotations

import os
import statistics as st
import subprocess
import time
from pathlib import Path

from .common import IMAGE, Binaries, Row, api, cpu_ms, engine, log, run_to_end

GOAL = "<= 1.00x docker run --rm; engine CPU per run <= 5 ms"


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_RUNS", "20"))
    with engine(bins.engine, work) as e:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-true", "image": IMAGE,
                                             "command": ["true"]})

        def through_jobdock() -> float:
            t0 = time.monotonic()
            run = run_to_end(base, "bench-true")
            if run["status"] != "succeeded":
                raise RuntimeError(f"run {run['id']} ended {run['status']}: {run}")
            return (time.monotonic() - t0) * 1000

        def docker_run() -> float:
            t0 = time.monotonic()
            subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True)
            return (time.monotonic() - t0) * 1000

        log("warming up (one run of each, not counted)")
        through_jobdock()
        docker_run()
        log(f"{n} runs of each, interleaved")
        ours, theirs = [], []
        run_cpu = idle_cpu = idle_s = 0.0
        for _ in range(n):
            c0 = cpu_ms(e.pid)
            ours.append(through_jobdock())
            c1, t1 = cpu_ms(e.pid), time.monotonic()
            theirs.append(docker_run())
            # While docker runs, the engine idles: its CPU then is its background loops'.
            idle_cpu += cpu_ms(e.pid) - c1
            idle_s += time.monotonic() - t1
            run_cpu += c1 - c0
    ratio = st.median(ours) / st.median(theirs)
    return [Row(
        "trigger->finished",
        f"median {st.median(ours):.0f} ms, CPU {run_cpu / n:.1f} ms/run",
        f"median {st.median(theirs):.0f} ms (docker run --rm)",
        round(ratio, 3), GOAL,
        {"runs": n, "jobdock_ms": ours, "docker_ms": theirs,
         "engine_cpu_ms_per_run": round(run_cpu / n, 2),
         "engine_cpu_ms_per_idle_s": round(idle_cpu / idle_s, 2) if idle_s else None},
    )]
