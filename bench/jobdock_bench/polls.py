"""Status polls: `wrk` on `GET /api/v1/runs/{id}` of a finished run, with a bearer token, on
SQLite and (when a server answers) PostgreSQL, against bench/baseline — a bare axum endpoint
that checks a bearer token and serialises the same body — measured in the same run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from .common import IMAGE, TOKEN, Binaries, Process, Row, api, engine, log, run_to_end, wrk

GOAL = ">= 0.35x the bare endpoint, p99 < 10 ms"
PG_ADMIN = os.environ.get(
    "JOBDOCK_BENCH_POSTGRES", "postgres://postgres:postgres@127.0.0.1:5432/postgres"
)


def pg_database() -> Optional[str]:
    """A fresh database on the PostgreSQL server, or None when none answers."""
    name = f"jobdock_bench_{os.getpid()}"
    made = subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"],
                          capture_output=True, text=True)
    if made.returncode:
        log(f"PostgreSQL not measured: {made.stderr.strip()}")
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                   capture_output=True)


def side(r: dict) -> str:
    return f"{r['requests_per_s']}/s p99 {r['p99_ms']} ms"


def measure(bins: Binaries, work: Path) -> list[Row]:
    rows = []
    stores: list[tuple[str, Optional[str]]] = [("sqlite", None)]
    pg = pg_database()
    if pg:
        stores.append(("postgres", pg))
    try:
        for store, url in stores:
            with engine(bins.engine, work, url) as e:
                base = f"http://{e.addr}"
                api(f"{base}/api/v1/jobs", "POST",
                    {"name": "bench-poll", "image": IMAGE, "command": ["true"]})
                run = run_to_end(base, "bench-poll")
                body = work / "run.json"
                body.write_text(json.dumps(run))
                path = f"/api/v1/runs/{run['id']}"
                with Process([str(bins.baseline), "127.0.0.1:0", TOKEN, str(body)], {},
                             r"listening on (\S+)", work / "baseline.log") as b:
                    # Alternated, best of two each: a burst of other load hits both alike.
                    ours, best = [], []
                    for _ in range(2):
                        best.append(wrk(f"http://{b.addr}{path}"))
                        ours.append(wrk(f"{base}{path}"))
            top = max(ours, key=lambda r: r["requests_per_s"])
            ceiling = max(best, key=lambda r: r["requests_per_s"])
            rows.append(Row(f"polls ({store})", side(top), side(ceiling),
                            round(top["requests_per_s"] / ceiling["requests_per_s"], 3), GOAL,
                            {"jobdock": top, "baseline": ceiling}))
    finally:
        if pg:
            drop_pg(pg)
    return rows
