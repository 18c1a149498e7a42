"""JobdockRunJobOperator: trigger a run of a Jobdock job and wait for its end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from jobdock_airflow.compat import BaseOperator
from jobdock_airflow.hooks import MAX_WAIT_SECONDS, JobdockHook
from jobdock_airflow.idempotency import idempotency_key_from_context
from jobdock_airflow.runs import failure_message, is_final
from jobdock_airflow.triggers import JobdockRunTrigger

XCOM_RUN_ID = "run_id"
XCOM_RUN_STATUS = "run_status"
# How long a timed-out run is given to stop after its cancel (SIGTERM, the job's grace, SIGKILL).
CANCEL_WAIT_SECONDS = 60


class JobdockRunJobOperator(BaseOperator):
    """Triggers a run of the Jobdock job `job` and, with `wait`, waits for it to end.

    :param job: the job's name (templated).
    :param env: variables added to the run's environment (templated).
    :param jobdock_conn_id: the `jobdock` connection (host: engine URL, password: token).
    :param wait: wait for the run's end; when False the task succeeds once the run is queued.
    :param deferrable: wait in the triggerer instead of a worker slot
        (default: `[operators] default_deferrable`).
    :param poll_interval: how long one status request waits for the run to end (a long poll
        the engine answers as soon as the run ends; 1–60 seconds).
    :param timeout: seconds (or a timedelta) the run may take from its trigger; past it the
        run is cancelled and the task fails. None waits as long as the run lasts.
    :param log_tail_lines: how many of the run's last log lines are copied into the task log.

    XCom: `run_id` and `run_status`; the return value is the run id. The run's idempotency key
    is made of the task instance and its try number, so a re-sent trigger finds the same run
    and an Airflow retry starts a new one. The task fails with the run's status, exit code,
    reason and log link when the run did not succeed.
    """

    template_fields: Sequence[str] = ("job", "env")
    template_fields_renderers = {"env": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        job: str,
        env: dict[str, str] | None = None,
        jobdock_conn_id: str = JobdockHook.default_conn_name,
        wait: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        timeout: float | timedelta | None = None,
        log_tail_lines: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.env = env
        self.jobdock_conn_id = jobdock_conn_id
        self.wait = wait
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.log_tail_lines = log_tail_lines
        self.jobdock_run_id: str | None = None
        self._run_ended = False

    def hook(self) -> JobdockHook:
        return JobdockHook(jobdock_conn_id=self.jobdock_conn_id)

    def execute(self, context: Any) -> str:
        hook = self.hook()
        key = idempotency_key_from_context(context)
        run = hook.trigger_run(self.job, env=self.env, idempotency_key=key)
        self.jobdock_run_id = run["id"]
        self.log.info("Jobdock run %s of job %s is %s (idempotency key %s)", run["id"], self.job, run["status"], key)
        context["ti"].xcom_push(key=XCOM_RUN_ID, value=run["id"])
        if not self.wait:
            context["ti"].xcom_push(key=XCOM_RUN_STATUS, value=run["status"])
            return run["id"]
        deadline = None if self.timeout is None else time.time() + self.timeout
        if self.deferrable and not is_final(run):
            self.defer(
                trigger=JobdockRunTrigger(
                    run_id=run["id"],
                    jobdock_conn_id=self.jobdock_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                ),
                method_name="execute_complete",
            )
        run, timed_out = self._wait(hook, run, deadline)
        return self._finish(hook, run, context, timed_out=timed_out)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        """Resumes a deferred task with the trigger's event."""
        hook = self.hook()
        self.jobdock_run_id = event["run_id"]
        context["ti"].xcom_push(key=XCOM_RUN_ID, value=self.jobdock_run_id)
        if event["status"] == "timeout":
            return self._finish(hook, self._cancel_late_run(hook, self.jobdock_run_id), context, timed_out=True)
        if event["status"] == "error":
            raise AirflowException(f"Waiting for Jobdock run {self.jobdock_run_id} failed: {event.get('message')}")
        return self._finish(hook, event["run"], context)

    def _wait(self, hook: JobdockHook, run: dict[str, Any], deadline: float | None) -> tuple[dict[str, Any], bool]:
        """Long-polls the run until it ends; once `deadline` passes, cancels it. Returns the
        run and whether it timed out."""
        wait = max(1, min(int(self.poll_interval), MAX_WAIT_SECONDS))
        while not is_final(run):
            remaining = None if deadline is None else deadline - time.time()
            if remaining is not None and remaining <= 0:
                return self._cancel_late_run(hook, run["id"]), True
            this_wait = wait if remaining is None else max(1, min(wait, int(remaining) + 1))
            run = hook.get_run(run["id"], wait_seconds=this_wait)
            if not is_final(run):
                self.log.info("Jobdock run %s is %s", run["id"], run["status"])
        return run, False

    def _cancel_late_run(self, hook: JobdockHook, run_id: str) -> dict[str, Any]:
        """Cancels a run that outlived `timeout` and gives it a while to stop."""
        self.log.warning("Jobdock run %s outlived the timeout of %s s: cancelling it", run_id, self.timeout)
        hook.cancel_run(run_id)
        stop_by = time.monotonic() + CANCEL_WAIT_SECONDS
        run = hook.get_run(run_id)
        while not is_final(run) and time.monotonic() < stop_by:
            run = hook.get_run(run_id, wait_seconds=min(MAX_WAIT_SECONDS, CANCEL_WAIT_SECONDS))
        return run

    def _finish(self, hook: JobdockHook, run: dict[str, Any], context: Any, timed_out: bool = False) -> str:
        """Pushes the status, copies the log tail into the task log, fails unless succeeded."""
        self._run_ended = is_final(run)
        context["ti"].xcom_push(key=XCOM_RUN_STATUS, value=run["status"])
        self._copy_log_tail(hook, run["id"])
        if timed_out:
            raise AirflowException(
                f"Jobdock run {run['id']} of job {run.get('job')} did not end within the timeout of "
                f"{self.timeout} s and was cancelled; it is {run['status']} "
                f"(exit code {run.get('exit_code')}): {run.get('reason')}; logs: {run.get('logs_url')}"
            )
        if run["status"] != "succeeded":
            raise AirflowException(failure_message(run))
        self.log.info("Jobdock run %s succeeded", run["id"])
        return run["id"]

    def _copy_log_tail(self, hook: JobdockHook, run_id: str) -> None:
        if self.log_tail_lines <= 0:
            return
        try:
            tail = hook.get_log_tail(run_id, self.log_tail_lines)
        except Exception as err:  # the run's outcome matters more than its log
            self.log.warning("Could not read the log of Jobdock run %s: %s", run_id, err)
            return
        self.log.info(
            "Last %d log lines of Jobdock run %s:\n%s", self.log_tail_lines, run_id, tail.rstrip("\n") or "(empty)"
        )

    def on_kill(self) -> None:
        """The task was killed while it waited: cancel the run (one that already ended is fine)."""
        if self.jobdock_run_id is None or self._run_ended:
            return
        self.log.info("Cancelling Jobdock run %s", self.jobdock_run_id)
        try:
            if self.hook().cancel_run(self.jobdock_run_id) is None:
                self.log.info("Jobdock run %s had already ended", self.jobdock_run_id)
        except Exception:
            self.log.exception("Cancelling Jobdock run %s failed", self.jobdock_run_id)
