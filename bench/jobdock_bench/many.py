"""Many runs at once: BENCH_MANY_RUNS containers (default 300) running `sleep` together.
Jobdock's side, with all of them running: the engine's resident memory, its CPU per second
(the per-pass cost of supervising them: heartbeats, anomaly checks, cancel checks), and the
p99 of API calls that read the store (a running run, and the list of running runs). The best
possible side: the same engine, measured just before, with nothing running. A bare axum
endpoint (bench/baseline, serving the probe run's JSON) is measured beside it in both states:
how much slower the machine itself answers with that many containers running; each API p99
is also given against it, in each state, so that what the engine adds to the machine's own
slowdown shows."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from .common import (IMAGE, TOKEN, Binaries, Process, Row, api, cpu_ms, engine, log, rss_mib,
                     running_run, wrk)

BARE = "the machine (a bare axum endpoint)"
GOAL = "RSS <= 150 MiB; API p99 <= 1.2x idle; CPU grows with what changes, not with what runs"


def running(base: str) -> int:
    return len(api(f"{base}/api/v1/runs?job=bench-many&status=running&limit=500")["items"])


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_MANY_RUNS", "300"))
    with engine(bins.engine, work, env={"JOBDOCK_MAX_RUNNING": "docker=1000"}) as e, \
            contextlib.ExitStack() as stack:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {
            "name": "bench-many", "image": IMAGE, "command": ["sleep", "3600"],
            "max_parallel": n, "max_queued": n, "stop_grace_seconds": 1})
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-probe", "image": IMAGE,
                                             "command": ["sleep", "3600"]})
        probe = running_run(base, "bench-probe")
        # Answers of the same size with one run going and with all of them.
        paths = {"poll (a running run)": f"/api/v1/runs/{probe['id']}",
                 "list (a job's runs)": "/api/v1/runs?job=bench-probe&limit=50",
                 "list (jobs)": "/api/v1/jobs"}

        body = work / "many-run.json"
        body.write_text(json.dumps(probe))
        bare = Process([str(bins.baseline), "127.0.0.1:0", TOKEN, str(body)], {},
                       r"listening on (\S+)", work / "many-baseline.log")
        stack.callback(bare.stop)

        def sample() -> dict:
            c0, t0 = cpu_ms(e.pid), time.monotonic()
            time.sleep(10)
            cpu = (cpu_ms(e.pid) - c0) / (time.monotonic() - t0)
            p99 = {k: wrk(f"{base}{p}", connections=8, seconds=5) for k, p in paths.items()}
            p99[BARE] = wrk(f"http://{bare.addr}/api/v1/runs/{probe['id']}", connections=8,
                            seconds=5)
            return {"cpu_ms_per_s": round(cpu, 2), "rss_mib": rss_mib(e.pid), **p99}

        log("measuring with one run going")
        idle = sample()
        log(f"starting {n} runs")
        t0 = time.monotonic()
        for _ in range(n):
            api(f"{base}/api/v1/jobs/bench-many/runs", "POST", {})
        while (up := running(base)) < n:
            if time.monotonic() - t0 > 900:
                raise RuntimeError(f"only {up} of {n} runs running after 15 minutes")
            time.sleep(1)
        started = time.monotonic() - t0
        log(f"{n} running after {started:.0f} s; measuring")
        busy = sample()
        stack.close()
        api(f"{base}/api/v1/jobs/bench-many?force=true", "DELETE")
        api(f"{base}/api/v1/jobs/bench-probe?force=true", "DELETE")
        while running(base) > 0 or api(
                f"{base}/api/v1/runs?job=bench-probe&status=running&limit=1")["items"]:
            time.sleep(1)
    rows = [Row(
        f"{n} runs at once: engine", f"CPU {busy['cpu_ms_per_s']} ms/s, RSS {busy['rss_mib']} MiB",
        f"CPU {idle['cpu_ms_per_s']} ms/s, RSS {idle['rss_mib']} MiB (one run)",
        round(busy["cpu_ms_per_s"] / idle["cpu_ms_per_s"], 2) if idle["cpu_ms_per_s"] else None,
        GOAL, {"runs": n, "seconds_to_start": round(started, 1), "busy": busy, "idle": idle},
    )]
    for k in [*paths, BARE]:
        rows.append(Row(f"{n} runs at once: {k}", f"p99 {busy[k]['p99_ms']} ms",
                        f"p99 {idle[k]['p99_ms']} ms (one run)",
                        round(busy[k]["p99_ms"] / idle[k]["p99_ms"], 2), GOAL, {}))
    # The same p99s against the best possible in each state: the bare endpoint, which the
    # containers slow down as much as any process on the machine. Above 1, the engine's tail
    # grew more than the machine's.
    for k in paths:
        loaded = busy[k]["p99_ms"] / busy[BARE]["p99_ms"]
        quiet = idle[k]["p99_ms"] / idle[BARE]["p99_ms"]
        rows.append(Row(f"{n} runs at once: {k}, against the machine",
                        f"{loaded:.2f}x the bare endpoint's p99",
                        f"{quiet:.2f}x with one run", round(loaded / quiet, 2),
                        "<= 1.2x (the engine's tail grows no more than the machine's)", {}))
    return rows
