"""A chatty run's log: one container prints numbered lines of 100 bytes (101 with the
newline) as fast as it can, BENCH_LOG_BYTES of output in all (default 1 GiB, the issue's
goal; the engine's per-run cap is raised above it). Jobdock's side: the time from trigger
to finished, the bytes the run says it stored, every line read back through the API and
checked to be there once and in order, and the engine's peak memory and CPU. The best
possible side: the same container under `docker run` with a `json-file` driver that keeps
everything, its output read by `docker logs` once it has ended."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from .common import IMAGE, TOKEN, Binaries, Row, api, cpu_ms, engine, peak_rss_mib, run_to_end

GOAL = "every byte stored; throughput >= 0.8x docker logs; engine peak RSS <= 100 MiB"
LINE = 100  # bytes of each line, without its newline


def script(lines: int) -> str:
    # "out " + 8 digits + " " + 87 x's = 100 bytes.
    return ("awk 'BEGIN { pad = sprintf(\"%87s\", \"\"); gsub(/ /, \"x\", pad); "
            f"for (i = 1; i <= {lines}; i++) printf \"out %08d %s\\n\", i, pad }}'")


def check_back(base: str, run_id: str) -> tuple[int, int, int]:
    """Reads the run's whole log through the API, streamed, and checks that its lines are
    the container's, numbered 1, 2, 3... with none missing, repeated or out of order.
    Returns (lines in order, their bytes without newlines, the first line out of place
    or 0)."""
    req = urllib.request.Request(f"{base}/api/v1/runs/{run_id}/logs",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    expected, wrong, stored = 1, 0, 0
    with urllib.request.urlopen(req, timeout=1800) as r:
        for raw in r:
            # "<ts> stdout out 00000001 xxx..."
            parts = raw.split(b" ", 4)
            if len(parts) < 4 or parts[1] != b"stdout":
                continue
            if parts[2] != b"out" or int(parts[3]) != expected:
                wrong = wrong or expected
                break
            expected += 1
            stored += len(raw.rstrip(b"\n")) - len(parts[0]) - len(parts[1]) - 2
    return expected - 1, stored, wrong


def measure(bins: Binaries, work: Path) -> list[Row]:
    total = int(os.environ.get("BENCH_LOG_BYTES", str(1 << 30)))
    lines = -(-total // (LINE + 1))
    cap_mb = lines * LINE // (1 << 20) + 64
    with engine(bins.engine, work, args=("--log-cap-mb", str(cap_mb))) as e:
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-logs", "image": IMAGE,
                                             "command": ["sh", "-c", script(lines)]})
        cpu0 = cpu_ms(e.pid)
        t0 = time.monotonic()
        run = run_to_end(base, "bench-logs")
        ours_s = time.monotonic() - t0
        cpu_s = (cpu_ms(e.pid) - cpu0) / 1000
        peak = peak_rss_mib(e.pid)
        in_order, stored, wrong = check_back(base, run["id"])
    name = f"jobdock-bench-logs-{os.getpid()}"
    t0 = time.monotonic()
    # A driver that keeps everything: the daemon's own may rotate, and `docker logs` would
    # then read (and be timed on) only what is left.
    subprocess.run(["docker", "run", "--name", name, "--log-driver", "json-file",
                    "--log-opt", "max-size=8g", IMAGE, "sh", "-c", script(lines)],
                   check=True, stdout=subprocess.DEVNULL)
    read = 0
    try:
        with subprocess.Popen(["docker", "logs", name], stdout=subprocess.PIPE) as p:
            for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
                read += chunk.count(b"\n")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    theirs_s = time.monotonic() - t0
    return [Row(
        f"logs ({lines * (LINE + 1) / (1 << 30):.2f} GiB, {lines} lines)",
        f"{in_order} lines in order, {stored} B stored in {ours_s:.1f} s, peak RSS {peak} MiB,"
        f" CPU {cpu_s:.1f} s",
        f"{read} lines read in {theirs_s:.1f} s (docker run + logs)",
        round(theirs_s / ours_s, 3), GOAL,
        {"lines": lines, "bytes_written": lines * LINE, "bytes_read_back": stored,
         "lines_in_order": in_order, "first_wrong_line": wrong,
         "log_complete": run.get("log_complete"), "status": run["status"],
         "jobdock_s": round(ours_s, 2), "docker_s": round(theirs_s, 2),
         "engine_cpu_s": round(cpu_s, 1), "engine_peak_rss_mib": peak,
         "docker_logs_lines": read},
    )]
