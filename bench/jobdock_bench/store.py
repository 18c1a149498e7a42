"""A store that has grown: BENCH_STORE_RUNS past runs (default 1,000,000) against a small
store (3,000 runs: a full page of runs for each job), on SQLite.

Two engines run side by side: one on the small store, one on a copy into which a finished
run (its row, attempt, timeline and statistics, as a real run leaves them) was cloned
directly in the database, spread over 50 jobs and the last 25 days; the statistics only for
each job's newest 1,000 runs, which is what the engine keeps. The seeded store is on disk
before the engines start. wrk measures both alternately, BENCH_STORE_ROUNDS rounds of 5 s each
(default 5): a trigger (a POST whose run is skipped because a held lock is full, so that no
container starts), a status poll of a running run (the database path; an ended run is
answered from memory), and the first page of a job's runs. The figures are the ratios of the
median p99s against the small store (a 5-second p99 of either store moves by several times
from one round to the next on this kind of machine: a best of two measured the rounds' luck),
and the bytes the store takes per run.

Then retention: the big engine restarts with its default policy (30 days, 1,000 runs per job)
on runs that were spread over 90 days instead, and the trigger's p99 is measured while it
prunes them (for at most BENCH_PRUNE_SECONDS, default 300), against the small store's in the
same rounds.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from .common import (IMAGE, Binaries, Process, Row, api, engine, log, run_to_end, running_run,
                     wrk)

GOAL_P99 = "p99 <= 1.2x a small store"
GOAL_BYTES = "<= 2 KiB per run without its log"
JOBS = 50
# The longest the retention part measures (BENCH_PRUNE_SECONDS); pruning goes on after it.
PRUNE_SECONDS = int(os.environ.get("BENCH_PRUNE_SECONDS", "300"))
# Rounds of each figure on each side (BENCH_STORE_ROUNDS); the median p99 is compared.
ROUNDS = int(os.environ.get("BENCH_STORE_ROUNDS", "5"))
# Runs in the store the big one is compared with: a full page of runs for each job.
SMALL = JOBS * 60
# The statistics the engine keeps of each job's newest runs (`stats::KEEP_PER_JOB`).
STATS_KEPT = 1000
DAY_MS = 86_400_000
# The columns of the cloned rows that hold a time, shifted back per clone.
TIMES = {"created_at", "first_started_at", "started_at", "finished_at", "next_attempt_at",
         "lease_expires_at", "last_output_at", "progress_at", "at"}


def prepare(base: str) -> str:
    """JOBS jobs and one finished run, the template of the clones; its id."""
    for k in range(JOBS):
        api(f"{base}/api/v1/jobs", "POST", {"name": f"bench-store-{k}", "image": IMAGE,
                                             "command": ["true"]})
    return run_to_end(base, "bench-store-0")["id"]


def hold(base: str) -> str:
    """A job whose triggers find its lock held by a sleeping run and are skipped
    (`on_conflict: skip`): each trigger writes its run, and none starts a container or
    lengthens a queue that later triggers would count; the holder's id."""
    api(f"{base}/api/v1/jobs", "POST", {"name": "bench-hold", "image": IMAGE,
                                         "command": ["sleep", "3600"], "lock_keys": ["bench"]})
    api(f"{base}/api/v1/jobs", "POST", {"name": "bench-queue", "image": IMAGE,
                                         "command": ["true"], "lock_keys": ["bench"],
                                         "on_conflict": "skip"})
    return running_run(base, "bench-hold")["id"]


def release(e: Process, holder: str) -> None:
    """Cancels what [hold] queued and started, stops the engine, removes the holder's
    container."""
    base = f"http://{e.addr}"
    for job in ("bench-queue", "bench-hold"):
        try:
            api(f"{base}/api/v1/jobs/{job}?force=true", "DELETE")
        except Exception as err:  # noqa: BLE001 - the container is removed below anyway
            log(f"could not delete {job}: {err}")
    e.stop()
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=dev.jobdock.run-id={holder}"],
        capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def copy_store(pristine: Path, to: Path) -> None:
    """A copy of the data directory as another installation: two engines with one
    installation id on one Docker daemon would each remove the other's containers as
    leftovers of their own."""
    shutil.copytree(pristine, to, ignore=shutil.ignore_patterns("engine*.log"))
    db = sqlite3.connect(to / "jobdock.db")
    db.execute("UPDATE settings SET value = ? WHERE key = 'installation_id'",
               (str(uuid.uuid4()),))
    db.commit()
    db.close()


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def seed(path: Path, template: str, count: int, days: int) -> None:
    """Clones run `template` `count` times, oldest first, spread over the last `days` days
    and the JOBS jobs."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("CREATE TEMP TABLE seed_jobs (k INTEGER PRIMARY KEY, id TEXT, name TEXT)")
    db.execute("INSERT INTO seed_jobs (k, id, name) SELECT CAST(substr(name, 13) AS INTEGER), "
               "id, name FROM jobs WHERE name LIKE 'bench-store-%' AND deleted_at IS NULL")
    step = days * DAY_MS // count
    numbers = (f"WITH RECURSIVE n(i) AS (SELECT {count} UNION ALL SELECT i - 1 FROM n "
               f"WHERE i > 1)")

    def clone(table: str, key: str, skip: tuple[str, ...], extra: dict[str, str],
              newest: int = count) -> None:
        cols = [c for c in columns(db, table) if c not in skip]
        values = []
        for c in cols:
            if c == key:
                values.append("'seed-' || n.i")
            elif c in extra:
                values.append(extra[c])
            elif c in TIMES:
                values.append(f"t.{c} - n.i * {step}")
            else:
                values.append(f"t.{c}")
        db.execute(f"{numbers} INSERT INTO {table} ({', '.join(cols)}) "
                   f"SELECT {', '.join(values)} FROM n JOIN {table} t ON t.{key} = ? "
                   f"JOIN seed_jobs j ON j.k = n.i % {JOBS} WHERE n.i <= {newest} "
                   f"ORDER BY n.i DESC", (template,))

    clone("runs", "id", ("seq",), {"job_id": "j.id", "job_name": "j.name"})
    clone("run_attempts", "run_id", (), {})
    clone("run_events", "run_id", ("id",), {})
    # The engine keeps the statistics of each job's newest STATS_KEPT runs: a store that grew
    # under it holds no more.
    clone("run_stats", "run_id", (), {"job_name": "j.name"}, newest=JOBS * STATS_KEPT)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    # Written without syncing, for speed: on disk before the engines start, as the pages of a
    # store that grew over months are, so that no engine's first sync pays for the seeding.
    os.sync()


def used_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    db.close()
    return (pages - free) * size


def p99_side(rounds: list[dict]) -> str:
    """The median p99 of the rounds, their range and the median rate."""
    p99s = [r["p99_ms"] for r in rounds]
    rate = statistics.median(r["requests_per_s"] for r in rounds)
    return (f"p99 {statistics.median(p99s)} ms, median of {len(p99s)} rounds "
            f"({min(p99s)}–{max(p99s)}; {rate:,.0f}/s)")


def measure(bins: Binaries, work: Path) -> list[Row]:
    count = int(os.environ.get("BENCH_STORE_RUNS", "1000000"))
    pristine = work / "store-template"
    pristine.mkdir()
    post = work / "post.lua"
    post.write_text('wrk.method = "POST"\nwrk.body = "{}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
    keep = {"JOBDOCK_RETENTION_DAYS": "3650", "JOBDOCK_RETENTION_MAX_RUNS_PER_JOB": "10000000"}
    with engine(bins.engine, work, data=pristine, env=keep) as e:
        template = prepare(f"http://{e.addr}")
    small_dir, big_dir = work / "store-small", work / "store-big"
    for d in (small_dir, big_dir):
        copy_store(pristine, d)
    # The small store holds enough runs for a full page of each job's runs.
    seed(small_dir / "jobdock.db", template, SMALL, 25)
    before = used_bytes(big_dir / "jobdock.db")
    log(f"seeding {count:,} runs")
    t0 = time.monotonic()
    seed(big_dir / "jobdock.db", template, count, 25)
    log(f"seeded in {time.monotonic() - t0:.0f} s")
    per_run = (used_bytes(big_dir / "jobdock.db") - before) / count

    rows: list[Row] = []
    with engine(bins.engine, work, data=small_dir, env=keep) as small, \
            engine(bins.engine, work, data=big_dir, env=keep) as big:
        sides = {"small": small, "big": big}
        holders = {n: hold(f"http://{e.addr}") for n, e in sides.items()}
        try:
            targets = {
                "trigger": lambda b, n: (f"{b}/api/v1/jobs/bench-queue/runs", post),
                "poll (running run)": lambda b, n: (f"{b}/api/v1/runs/{holders[n]}", None),
                "list (a job's first page)":
                    lambda b, n: (f"{b}/api/v1/runs?job=bench-store-1&limit=50", None),
            }
            for figure, target in targets.items():
                got: dict[str, list[dict]] = {"small": [], "big": []}
                for _ in range(ROUNDS):
                    for name, e in sides.items():
                        url, script = target(f"http://{e.addr}", name)
                        got[name].append(wrk(url, connections=8, seconds=5, script=script))
                median = {n: statistics.median(r["p99_ms"] for r in rs) for n, rs in got.items()}
                rows.append(Row(
                    f"{figure}, {count:,} runs", p99_side(got["big"]),
                    f"{p99_side(got['small'])} ({SMALL:,} runs)",
                    round(median["big"] / median["small"], 2), GOAL_P99,
                    {"big": got["big"], "small": got["small"]},
                ))
                log(f"{rows[-1].figure}: {rows[-1].jobdock} against {rows[-1].baseline}")
        finally:
            for name, e in sides.items():
                release(e, holders.get(name, ""))
    shutil.rmtree(big_dir)
    rows.append(Row(f"bytes per run, {count:,} runs", f"{per_run:,.0f} B", "", None, GOAL_BYTES,
                    {"runs": count, "bytes_per_run": round(per_run)}))
    rows.append(prune(bins, work, pristine, template, count, post, keep))
    return rows


def pruned_runs(engine_log: Path) -> int | None:
    """How many runs the first retention pass pruned, once it has ended."""
    for line in engine_log.read_text().splitlines():
        if "pruned old runs" in line or "nothing to prune" in line:
            found = re.search(r'"runs":(\d+)', line)
            return int(found.group(1)) if found else 0
    return None


def prune(bins: Binaries, work: Path, pristine: Path, template: str, count: int, post: Path,
          keep: dict[str, str]) -> Row:
    """Trigger p99 while retention prunes (the default policy, on runs spread over 90
    days), against the small store in the same rounds."""
    small_dir, big_dir = work / "prune-small", work / "prune-big"
    for d in (small_dir, big_dir):
        copy_store(pristine, d)
    seed(small_dir / "jobdock.db", template, SMALL, 25)
    log(f"seeding {count:,} runs over 90 days for retention")
    seed(big_dir / "jobdock.db", template, count, 90)
    rounds: list[tuple[dict, dict]] = []
    with engine(bins.engine, work, data=small_dir, env=keep) as small, \
            engine(bins.engine, work, data=big_dir) as big:
        t0 = time.monotonic()
        sides = {"small": small, "big": big}
        holders = {n: hold(f"http://{e.addr}") for n, e in sides.items()}
        try:
            pruned = None
            while pruned is None and time.monotonic() - t0 < PRUNE_SECONDS:
                rounds.append(tuple(
                    wrk(f"http://{e.addr}/api/v1/jobs/bench-queue/runs", 8, 3, post)
                    for e in (big, small)))
                pruned = pruned_runs(big_dir / "engine.log")
            seconds = time.monotonic() - t0
            finished = pruned is not None
            if pruned is None:
                # Still pruning: how far it got.
                db = sqlite3.connect(big_dir / "jobdock.db", timeout=60)
                left = db.execute("SELECT COUNT(*) FROM runs WHERE id LIKE 'seed-%'").fetchone()[0]
                db.close()
                pruned = count - left
        finally:
            for name, e in sides.items():
                release(e, holders.get(name, ""))
    worst = max(r[0]["p99_ms"] for r in rounds)
    worst_small = max(r[1]["p99_ms"] for r in rounds)
    what = "pruning" if finished else f"the first {seconds:.0f} s of pruning"
    return Row(
        f"trigger during {what} ({pruned:,} runs)", f"worst p99 {worst} ms",
        f"worst p99 {worst_small} ms ({SMALL:,} runs, same rounds)",
        round(worst / worst_small, 2), "no stall: p99 <= 1.2x a small store",
        {"pruned": pruned, "finished": finished, "seconds": round(seconds, 1),
         "runs_per_s": round(pruned / seconds), "rounds": rounds},
    )
