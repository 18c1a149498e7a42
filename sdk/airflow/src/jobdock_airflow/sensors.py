"""JobdockRunSensor: wait for a Jobdock run that something else started."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from jobdock_airflow.compat import BaseSensorOperator
from jobdock_airflow.hooks import JobdockHook
from jobdock_airflow.runs import failure_message, is_final
from jobdock_airflow.triggers import JobdockRunTrigger


class JobdockRunSensor(BaseSensorOperator):
    """Waits until the Jobdock run `run_id` (templated) ends: succeeds when it succeeded,
    fails with its status, exit code, reason and log link otherwise.

    In poke or reschedule mode each poke reads the run once. With `deferrable=True` the wait
    moves to the triggerer (long polls of up to `poke_interval` seconds, capped at 60). The
    sensor never cancels the run: it does not own it.
    """

    template_fields: Sequence[str] = ("run_id",)

    def __init__(
        self,
        *,
        run_id: str,
        jobdock_conn_id: str = JobdockHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.jobdock_conn_id = jobdock_conn_id
        self.deferrable = deferrable

    def poke(self, context: Any) -> bool:
        run = JobdockHook(jobdock_conn_id=self.jobdock_conn_id).get_run(self.run_id)
        self.log.info("Jobdock run %s is %s", self.run_id, run["status"])
        return self._ended(run)

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            trigger=JobdockRunTrigger(
                run_id=self.run_id,
                jobdock_conn_id=self.jobdock_conn_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        if event["status"] == "timeout":
            raise AirflowException(
                f"Jobdock run {self.run_id} did not end within the sensor's timeout of {self.timeout} s "
                f"(it is {event.get('run_status')})"
            )
        if event["status"] == "error":
            raise AirflowException(f"Waiting for Jobdock run {self.run_id} failed: {event.get('message')}")
        self._ended(event["run"])

    @staticmethod
    def _ended(run: dict[str, Any]) -> bool:
        if not is_final(run):
            return False
        if run["status"] != "succeeded":
            raise AirflowException(failure_message(run))
        return True
