"""A run's whole life on Docker Swarm: trigger->finished of a container running `true` through
Jobdock with the job on the `swarm` backend (a POST, then long polls), against the Docker CLI
doing the same on the swarm: `docker service create --mode replicated-job --restart-condition
none` (which, without --detach, returns once the job has completed) followed by `docker
service rm` of it, since Jobdock removes a run's service before it reports the run final.
The two are interleaved so that both see the same load; the engine's own CPU per run and
while idle as in `lifecycle`.

The CLI is given `--no-resolve-image`: the image was imported on this host, so asking a
registry for its digest (which fails here) is work Jobdock does not do either. `docker service
rm` leaves the job's container behind (moby/moby#44312), which Jobdock removes before it
reports the run final; the CLI side's `docker rm` of it is timed apart, in the details, and not
counted.

The details keep, per run, when each event of its timeline happened after the trigger, and
their medians: where the time goes.

The daemon must be (or becomes, as in the backend's tests) a one-node swarm manager.
BENCH_SWARM_RUNS sets how many runs of each (default 10)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import statistics as st
import subprocess
import time
from pathlib import Path

from .common import IMAGE, Binaries, Row, api, engine, interleaved, log, run_to_end

GOAL = "<= 1.10x docker service create --mode replicated-job + rm; engine CPU per run <= 5 ms"
LABEL = "dev.jobdock.bench=swarm"


def ensure_swarm() -> None:
    """Makes the daemon a one-node swarm unless it is in one, as the backend's tests do."""
    state = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                           check=True, capture_output=True, text=True).stdout.strip()
    if state != "active":
        log("making the Docker daemon a one-node swarm")
        out = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                             capture_output=True, text=True)
        if out.returncode and "already part of a swarm" not in out.stderr:
            raise RuntimeError(f"docker swarm init failed: {out.stderr.strip()}")
    manager = subprocess.run(["docker", "info", "--format", "{{.Swarm.ControlAvailable}}"],
                             check=True, capture_output=True, text=True).stdout.strip()
    if manager != "true":
        raise RuntimeError("the Docker daemon is in a swarm but not a manager")


def docker_ids(*args: str) -> list[str]:
    return subprocess.run(["docker", *args], check=True, capture_output=True,
                          text=True).stdout.split()


def remove_cli_leftovers() -> None:
    """The CLI side's services left by a run that failed half-way, and its containers."""
    if ids := docker_ids("service", "ls", "-q", "--filter", f"label={LABEL}"):
        subprocess.run(["docker", "service", "rm", *ids], check=True, capture_output=True)
    if ids := docker_ids("ps", "-aq", "--filter", f"label={LABEL}"):
        subprocess.run(["docker", "rm", "-f", *ids], check=True, capture_output=True)


def timeline(base: str, run_id: str) -> dict[str, float]:
    """Each event kind's first time in the run's timeline, in ms after its `queued`."""
    items = api(f"{base}/api/v1/runs/{run_id}/events?limit=500")["items"]
    at = {}
    for e in items:
        at.setdefault(e["kind"], dt.datetime.fromisoformat(e["at"].replace("Z", "+00:00")))
    t0 = at.get("queued") or min(at.values())
    return {k: round((t - t0).total_seconds() * 1000) for k, t in at.items()}


def measure(bins: Binaries, work: Path) -> list[Row]:
    n = int(os.environ.get("BENCH_SWARM_RUNS", "10"))
    ensure_swarm()
    remove_cli_leftovers()
    with engine(bins.engine, work) as e:
        base = f"http://{e.addr}"
        ready = api(f"{base}/readyz")
        if "swarm" not in ready.get("backends", {}):
            raise RuntimeError(f"the engine has no swarm backend: {ready}")
        api(f"{base}/api/v1/jobs", "POST", {"name": "bench-swarm", "image": IMAGE,
                                             "command": ["true"], "backend": "swarm"})
        run_ids: list[str] = []
        container_rm: list[float] = []

        def through_jobdock() -> float:
            t0 = time.monotonic()
            run = run_to_end(base, "bench-swarm")
            took = (time.monotonic() - t0) * 1000
            if run["status"] != "succeeded":
                raise RuntimeError(f"run {run['id']} ended {run['status']}: {run}")
            run_ids.append(run["id"])
            return took

        names = (f"bench-swarm-{os.getpid()}-{k}" for k in itertools.count())

        def through_cli() -> float:
            name = next(names)
            t0 = time.monotonic()
            subprocess.run(
                ["docker", "service", "create", "--quiet", "--name", name, "--label", LABEL,
                 "--container-label", LABEL, "--mode", "replicated-job",
                 "--restart-condition", "none", "--no-resolve-image", IMAGE, "true"],
                check=True, capture_output=True, timeout=120)
            created = time.monotonic()
            # Not timed: that the job completed (the CLI also returns for a failed one).
            state = subprocess.run(
                ["docker", "service", "ps", name, "--format", "{{.CurrentState}}"],
                check=True, capture_output=True, text=True).stdout
            if not state.startswith("Complete"):
                raise RuntimeError(f"service {name} did not complete: {state.strip()}")
            t1 = time.monotonic()
            subprocess.run(["docker", "service", "rm", name], check=True, capture_output=True)
            took = (created - t0 + time.monotonic() - t1) * 1000
            containers = docker_ids("ps", "-aq", "--filter",
                                    f"label=com.docker.swarm.service.name={name}")
            t2 = time.monotonic()
            subprocess.run(["docker", "rm", *containers], check=True, capture_output=True)
            container_rm.append((time.monotonic() - t2) * 1000)
            return took

        try:
            got = interleaved(e.pid, n, through_jobdock, through_cli)
        finally:
            remove_cli_leftovers()
        # The first of each was the warm-up.
        timelines = [timeline(base, r) for r in run_ids[1:]]
    ours, theirs = got.ours, got.theirs
    kinds = [k for k in timelines[0] if all(k in t for t in timelines)]
    medians = {k: st.median(t[k] for t in timelines) for k in kinds}
    log("timeline medians (ms after queued): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(medians.items(), key=lambda kv: kv[1])))
    ratio = st.median(ours) / st.median(theirs)
    return [Row(
        "trigger->finished on Swarm",
        f"median {st.median(ours):.0f} ms, CPU {got.engine_cpu_ms_per_run:.1f} ms/run",
        f"median {st.median(theirs):.0f} ms (docker service create --mode replicated-job + rm)",
        round(ratio, 3), GOAL,
        {"runs": n, "jobdock_ms": ours, "docker_cli_ms": theirs,
         "docker_container_rm_ms": container_rm[1:],
         "engine_cpu_ms_per_run": got.engine_cpu_ms_per_run,
         "engine_cpu_ms_per_idle_s": got.engine_cpu_ms_per_idle_s,
         "timeline_median_ms": medians, "timelines_ms": timelines},
    )]
