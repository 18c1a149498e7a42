"""A run's whole life: trigger→finished of a container running `true` through Jobdock (a
POST, then long polls) against `docker run --rm` of the same image, interleaved so that both
see the same load; and the engine's own CPU per run and while idle (utime+stime from /proc).

BENCH_RUNS sets how many runs of each (default 20)."""

from __future__ import annotations

import os
import statistics as st
from pathlib import Path

from .common import (IMAGE, Binaries, Row, api, engine, interleaved, timed_docker_run,
                     timed_run)

GOAL = "<= 1.00x docker run --rm; engine CPU per run <= 5 ms"


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_RUNS", "20"))
    with engine(bins.engine, work) as e:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-true", "image": IMAGE,
                                             "command": ["true"]})

        def through_jobdock() -> float:
            return timed_run(base, "bench-true")

        docker_run = timed_docker_run

        got = interleaved(e.pid, n, through_jobdock, docker_run)
    ours, theirs = got.ours, got.theirs
    ratio = st.median(ours) / st.median(theirs)
    return [Row(
        "trigger->finished",
        f"median {st.median(ours):.0f} ms, CPU {got.engine_cpu_ms_per_run:.1f} ms/run",
        f"median {st.median(theirs):.0f} ms (docker run --rm)",
        round(ratio, 3), GOAL,
        {"runs": n, "jobdock_ms": ours, "docker_ms": theirs,
         "engine_cpu_ms_per_run": got.engine_cpu_ms_per_run,
         "engine_cpu_ms_per_idle_s": got.engine_cpu_ms_per_idle_s},
    )]
