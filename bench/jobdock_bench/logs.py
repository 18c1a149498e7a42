"""A chatty run's log: one container prints BENCH_LOG_LINES numbered lines of about 100
bytes (default 600,000, about 60 MB) as fast as it can, through the daemon's own log
driver. Jobdock's side: lines stored, whether the run says its log is complete, the time
from trigger to finished and the engine's peak memory. The best possible side: the same
container under `docker run` with a `json-file` driver that keeps everything, its output
read by `docker logs` once it has ended."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .common import IMAGE, Binaries, Row, api, engine, peak_rss_mib, run_to_end

GOAL = "every line stored; throughput >= 0.8x docker logs; engine peak RSS <= 100 MiB"


def script(lines: int) -> str:
    return ("awk 'BEGIN { pad = sprintf(\"%88s\", \"\"); gsub(/ /, \"x\", pad); "
            f"for (i = 1; i <= {lines}; i++) printf \"out %07d %s\\n\", i, pad }}'")


def measure(bins: Binaries, work: Path) -> list[Row]:
    lines = int(os.environ.get("BENCH_LOG_LINES", "600000"))
    cap_mb = max(64, lines * 100 // (1 << 20) * 2)
    with engine(bins.engine, work, args=("--log-cap-mb", str(cap_mb))) as e:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-logs", "image": IMAGE,
                                             "command": ["sh", "-c", script(lines)]})
        t0 = time.monotonic()
        run = run_to_end(base, "bench-logs")
        ours_s = time.monotonic() - t0
        peak = peak_rss_mib(e.pid)
        text = api(f"{base}/api/v1/runs/{run['id']}/logs", timeout=600)
        stored = text.count(b" stdout out ")
    name = f"jobdock-bench-logs-{os.getpid()}"
    t0 = time.monotonic()
    # A driver that keeps everything: the daemon's own may rotate, and `docker logs` would
    # then read (and be timed on) only what is left.
    subprocess.run(["docker", "run", "--name", name, "--log-driver", "json-file",
                    "--log-opt", "max-size=4g", IMAGE, "sh", "-c", script(lines)],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        out = subprocess.run(["docker", "logs", name], check=True, capture_output=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    theirs_s = time.monotonic() - t0
    read = out.count(b"\nout ") + out.startswith(b"out ")
    return [Row(
        f"logs ({lines} lines)",
        f"{stored} stored in {ours_s:.1f} s, peak RSS {peak} MiB",
        f"{read} read in {theirs_s:.1f} s (docker run + logs)",
        round(theirs_s / ours_s, 3), GOAL,
        {"lines": lines, "stored": stored, "log_complete": run.get("log_complete"),
         "status": run["status"], "jobdock_s": round(ours_s, 2), "docker_s": round(theirs_s, 2),
         "engine_peak_rss_mib": peak, "docker_logs_lines": read},
    )]
