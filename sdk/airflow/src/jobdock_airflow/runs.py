"""What the provider needs to know about a Jobdock run: which statuses are final and how a
run that did not succeed is told to a person."""

from __future__ import annotations

from typing import Any

FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"})

# The members of a run that a trigger event carries (events are stored in Airflow's database,
# so they hold no more than the operator needs to finish).
SUMMARY_FIELDS = ("id", "job", "status", "exit_code", "reason", "logs_url")


def is_final(run: dict[str, Any]) -> bool:
    return run.get("status") in FINAL_STATUSES


def summary(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run.get(key) for key in SUMMARY_FIELDS}


def failure_message(run: dict[str, Any]) -> str:
    """One line naming the run, its status, exit code, reason and log link."""
    exit_code = run.get("exit_code")
    code = "no exit code" if exit_code is None else f"exit code {exit_code}"
    reason = run.get("reason") or "no reason given"
    return (
        f"Jobdock run {run.get('id')} of job {run.get('job')} ended {run.get('status')} "
        f"({code}): {reason}; logs: {run.get('logs_url')}"
    )
