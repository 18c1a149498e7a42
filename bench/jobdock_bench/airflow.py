"""Trigger→finished of a container running `true` through Apache Airflow's DockerOperator,
through Jobdock (a POST, then long polls, as in lifecycle) and by `docker run --rm`,
interleaved one of each per round so that all three see the same load (Airflow's idle
processes included), each reported as overhead above `docker run --rm`.

Airflow is apache-airflow 3.3.2 (the current line) with the Docker provider, pinned in
bench/airflow/requirements.txt and installed by scripts/venv (a minute or two the first time,
cached outside the clone after). It runs the careful user's way: LocalExecutor, metadata
database on the local PostgreSQL (JOBDOCK_BENCH_POSTGRES, else scripts/test's server; a
database `jobdock_bench_airflow` made afresh each time), AIRFLOW_HOME in the bench's work
directory, and four processes, each in a process group of its own: `db migrate` once, then
`api-server` (REST API, and the execution API that tasks report to), `scheduler` (with the
LocalExecutor's workers) and `dag-processor`. The DAG is bench/airflow/jobdock_bench_true.py:
one DockerOperator task, `auto_remove="success"`, `mount_tmp_dir=False`, `force_pull=False`
(the provider pulls only when that is set or the image is missing; nothing can be pulled
here, so a pull would fail the run). Settings, as environment variables:
  scheduler_heartbeat_sec=1      as the issue measured it (default 5). In Airflow 3 it only
                                 paces the scheduler's liveness heartbeat, not its loop.
  scheduler_idle_sleep_time      BENCH_AIRFLOW_IDLE_SLEEP, default 0.1 (Airflow's is 1): what
                                 does pace the loop. The scheduler sleeps this long after a
                                 loop that found nothing to do, so a trigger, and the end of
                                 its task, wait on average half of it before they are seen.
                                 A user tuning for latency lowers it (at a cost in idle CPU);
                                 BENCH_AIRFLOW_IDLE_SLEEP=1 measures Airflow's default.
  parallelism=4                  LocalExecutor starts this many workers up front (default
                                 32); one task at a time needs one, and the machine has 2 cores.
  parsing_processes=1            one DAG file (default 2).
  min_file_process_interval=60,  the DAG file does not change while measured: it is parsed
  refresh_interval=60            at once when first found, and re-parsing it (about 0.2 s
                                 of CPU each time) would only take CPU from the runs.
  api workers=1                  one API server process (Airflow's default, said explicitly).
  simple auth manager            one admin user with a password; the bench gets a JWT from
                                 POST /auth/token, as a script outside Airflow would.
The scheduler's `job_heartbeat_sec` is not set: in Airflow 3 it paces only the DAG processor's
liveness heartbeat; tasks heartbeat every `[workers] min_heartbeat_interval` (5 s), which a
run under a second never reaches.

A round triggers the DAG through the REST API (POST /api/v2/dags/{dag}/dagRuns) and polls
the run every 25 ms until it succeeds (a failed or stuck run raises); the DAG is unpaused and
each side runs once, uncounted, first. Where Airflow's time goes is taken afterwards from its
own timestamps (the run's queued_at, start_date, end_date and its task's start and end):
medians of each step are in the second row's details.

BENCH_AIRFLOW_RUNS sets how many rounds (default 10)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
import statistics as st
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

from .common import (IMAGE, ROOT, Binaries, Process, Row, api, engine, log, timed_docker_run,
                     timed_run)
from .polls import PG_ADMIN

DAG_ID = "jobdock_bench_true"
DAG_FILE = ROOT / "bench" / "airflow" / f"{DAG_ID}.py"
REQUIREMENTS = ROOT / "bench" / "airflow" / "requirements.txt"
DATABASE = "jobdock_bench_airflow"
POLL_S = 0.025
RUN_TIMEOUT_S = 120
GOAL = "Jobdock's overhead above docker run --rm <= 0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    done = subprocess.run(["psql", PG_ADMIN, "-qc", sql], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the airflow figure needs PostgreSQL ({PG_ADMIN}): "
                           f"{done.stderr.strip()}")


def fresh_database(stack: ExitStack) -> str:
    """The SQLAlchemy URL of an empty `jobdock_bench_airflow` on the PostgreSQL server,
    dropped again when `stack` closes (unless BENCH_KEEP is set)."""
    psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    psql(f"CREATE DATABASE {DATABASE}")
    if not os.environ.get("BENCH_KEEP"):
        stack.callback(psql, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    base = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+psycopg2://{base}/{DATABASE}"


def settings(home: Path, database: str, port: int, password: str) -> dict[str, str]:
    """Airflow's configuration (the module's docstring says why each is set)."""
    users = home / "passwords.json"
    users.write_text(json.dumps({"bench": password}))
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        # The API server also serves the execution API through which tasks fetch what they
        # need and report their end; the processes share the secret its tokens are signed with.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(users),
        # The scheduler serves task logs on this port (8793 by default, maybe taken).
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME":
            os.environ.get("BENCH_AIRFLOW_IDLE_SLEEP", "0.1"),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
    }


class AirflowApi:
    """Airflow's public REST API with a JWT from its simple auth manager."""

    def __init__(self, base: str, password: str, home: Path):
        self.base, self.home = base, home
        self.token = self.call("POST", "/auth/token",
                               {"username": "bench", "password": password})["access_token"]

    def call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(
            self.base + path, method=method, headers=headers,
            data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def wait_for_dag(self, timeout: float = 180) -> None:
        """Until the DAG processor has stored the DAG."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/api/v2/dags/{DAG_ID}")
                return
            except urllib.error.HTTPError as e:
                if e.code != 404 or time.monotonic() > deadline:
                    errors = self.call("GET", "/api/v2/importErrors")
                    raise RuntimeError(f"Airflow has no DAG {DAG_ID}: {errors}") from e
            time.sleep(0.5)

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def run_to_success(self) -> tuple[float, str]:
        """Triggers the DAG and polls its run until it succeeds: (ms, run id)."""
        t0 = time.monotonic()
        run = self.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None})
        path = self.run_path(run["dag_run_id"])
        while run["state"] != "success":
            if run["state"] == "failed" or time.monotonic() - t0 > RUN_TIMEOUT_S:
                raise RuntimeError(f"Airflow run {run['dag_run_id']} is {run['state']} after "
                                   f"{time.monotonic() - t0:.0f} s (logs in {self.home}): {run}")
            time.sleep(POLL_S)
            run = self.call("GET", path)
        return (time.monotonic() - t0) * 1000, run["dag_run_id"]

    def steps(self, run_id: str) -> dict[str, float]:
        """Where a finished run's time went, in ms, from Airflow's own timestamps."""
        run = self.call("GET", self.run_path(run_id))
        task = self.call("GET", f"{self.run_path(run_id)}/taskInstances/true")
        at = {k: dt.datetime.fromisoformat(v) for k, v in (
            ("queued", run["queued_at"]), ("run_start", run["start_date"]),
            ("task_start", task["start_date"]), ("task_end", task["end_date"]),
            ("run_end", run["end_date"]))}

        def ms(a: str, b: str) -> float:
            return round((at[b] - at[a]).total_seconds() * 1000, 1)

        return {"queued_to_run_start": ms("queued", "run_start"),
                "run_start_to_task_start": ms("run_start", "task_start"),
                "task": ms("task_start", "task_end"),
                "task_end_to_run_end": ms("task_end", "run_end")}


def start_airflow(stack: ExitStack, work: Path) -> tuple[AirflowApi, str]:
    """Airflow's processes on a fresh database, the DAG stored and unpaused: its API and
    version."""
    log("making or reusing Airflow's virtual environment (scripts/venv)")
    venv = Path(subprocess.run([str(ROOT / "scripts" / "venv"), str(REQUIREMENTS)],
                               check=True, stdout=subprocess.PIPE, text=True).stdout.strip())
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import airflow; print(airflow.__version__)"],
        check=True, capture_output=True, text=True).stdout.strip()
    home = Path(tempfile.mkdtemp(prefix="airflow-", dir=work))
    (home / "dags").mkdir()
    shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    password = secrets.token_hex(12)
    # The database first: the stack drops it after it has stopped the processes using it.
    env = settings(home, fresh_database(stack), free_port(), password)
    airflow = str(venv / "bin" / "airflow")
    log(f"Airflow {version}: migrating its database")
    with open(home / "db-migrate.log", "w") as out:
        migrated = subprocess.run([airflow, "db", "migrate"], env={**os.environ, **env},
                                  stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, process_group=0, timeout=600)
    if migrated.returncode:
        raise RuntimeError(f"airflow db migrate failed: "
                           f"{(home / 'db-migrate.log').read_text()[-2000:]}")
    log("starting Airflow's api-server, scheduler and dag-processor")
    api_server = stack.enter_context(Process(
        [airflow, "api-server"], env, r"Uvicorn running on (http://[\d.:]+)",
        home / "api-server.log", timeout=300))
    stack.enter_context(Process([airflow, "scheduler"], env, r"(Starting the scheduler)",
                                home / "scheduler.log", timeout=300))
    stack.enter_context(Process([airflow, "dag-processor"], env,
                                r"(Starting the Dag Processor Job)",
                                home / "dag-processor.log", timeout=300))
    client = AirflowApi(api_server.addr, password, home)
    client.wait_for_dag()
    client.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    return client, version


def overhead(ms: float, docker_ms: float) -> str:
    return f"{ms - docker_ms:+.0f} ms, {(ms - docker_ms) / docker_ms * 100:+.1f} %"


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_AIRFLOW_RUNS", "10"))
    with ExitStack() as stack:
        airflow, version = start_airflow(stack, work)
        e = stack.enter_context(engine(bins.engine, work))
        base = f"http://{e.addr}"
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-true", "image": IMAGE,
                                             "command": ["true"]})

        def through_jobdock() -> float:
            return timed_run(base, "bench-true")

        docker_run = timed_docker_run

        log("warming up (one run of each, not counted)")
        docker_run()
        through_jobdock()
        airflow.run_to_success()
        log(f"{n} rounds of docker run, Jobdock and Airflow")
        docker, ours, theirs, run_ids = [], [], [], []
        for i in range(n):
            docker.append(docker_run())
            ours.append(through_jobdock())
            ms, run_id = airflow.run_to_success()
            theirs.append(ms)
            run_ids.append(run_id)
            log(f"round {i + 1}: docker {docker[-1]:.0f} ms, Jobdock {ours[-1]:.0f} ms, "
                f"Airflow {ms:.0f} ms")
        steps = [airflow.steps(r) for r in run_ids]
    d, j, a = st.median(docker), st.median(ours), st.median(theirs)
    return [
        Row("airflow: trigger->finished vs docker run --rm",
            f"median {j:.0f} ms ({overhead(j, d)})",
            f"median {d:.0f} ms (docker run --rm)", round(j / d, 3), GOAL,
            {"runs": n, "docker_ms": docker, "jobdock_ms": ours, "airflow_ms": theirs}),
        Row("airflow: Airflow DockerOperator / Jobdock",
            f"median {j:.0f} ms ({overhead(j, d)})",
            f"Airflow {version}: median {a:.0f} ms ({overhead(a, d)})", round(a / j, 2),
            "ratio = Airflow / Jobdock (above 1: Jobdock is faster)",
            {"airflow_version": version,
             "docker_median_ms": round(d, 1), "jobdock_median_ms": round(j, 1),
             "airflow_median_ms": round(a, 1),
             "jobdock_overhead_ms": round(j - d, 1),
             "jobdock_overhead_pct": round((j - d) / d * 100, 1),
             "airflow_overhead_ms": round(a - d, 1),
             "airflow_overhead_pct": round((a - d) / d * 100, 1),
             "scheduler_idle_sleep_s": float(os.environ.get("BENCH_AIRFLOW_IDLE_SLEEP", "0.1")),
             "airflow_steps_median_ms": {k: st.median(s[k] for s in steps) for k in steps[0]},
             "airflow_steps_ms": steps}),
    ]
