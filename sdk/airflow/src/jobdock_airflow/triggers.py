"""Waiting for a Jobdock run in Airflow's triggerer, so that a deferred task holds no worker
slot; and cancelling the run when a user kills the deferred task."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from jobdock_airflow.compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS
from jobdock_airflow.hooks import MAX_WAIT_SECONDS, JobdockHook
from jobdock_airflow.runs import is_final, summary


# How long deciding whether to cancel, and cancelling, may take once a trigger is cancelled.
CANCEL_SECONDS = 30
# Cancels under way, referenced so that they finish even when the trigger's task is gone.
_CANCELS: set[asyncio.Task[None]] = set()


class JobdockRunTrigger(BaseTrigger):
    """Fires one event when the run reaches a final status, when `deadline` (seconds since the
    epoch) passes first, or when the engine cannot be read:

    - `{"status": "final", "run_id": ..., "run": {id, job, status, exit_code, reason, logs_url}}`
    - `{"status": "timeout", "run_id": ..., "run_status": ...}`
    - `{"status": "error", "run_id": ..., "message": ...}`

    Each status request is a long poll of up to `poll_interval` seconds (1–60), so the event
    comes as soon as the run ends. Its kwargs name the connection, never the token.

    With `cancel_on_kill`, a user's kill of the deferred task cancels the run: on Airflow 3.3+
    through `on_kill()`, which the triggerer calls for a user's action only; before 3.3 when the
    trigger is cancelled while its task instance is no longer deferred (a triggerer that stops
    or hands the trigger to another leaves the task deferred, and the run goes on).
    """

    def __init__(
        self,
        run_id: str,
        jobdock_conn_id: str = JobdockHook.default_conn_name,
        poll_interval: float = 30,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.jobdock_conn_id = jobdock_conn_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "jobdock_conn_id": self.jobdock_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _hook(self) -> JobdockHook:
        return JobdockHook(jobdock_conn_id=self.jobdock_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        run: dict[str, Any] = {}
        try:
            while True:
                wait = self._next_wait()
                if wait is None:
                    yield TriggerEvent({"status": "timeout", "run_id": self.run_id, "run_status": run.get("status")})
                    return
                run = await hook.aget_run(self.run_id, wait_seconds=wait)
                if is_final(run):
                    yield TriggerEvent({"status": "final", "run_id": self.run_id, "run": summary(run)})
                    return
                self.log.info("Jobdock run %s is %s", self.run_id, run.get("status"))
        except asyncio.CancelledError:
            # Airflow 3.3+ calls on_kill() for a user's kill; before, this is the only place.
            if not AIRFLOW_V_3_3_PLUS and self.cancel_on_kill:
                await self._shielded(self._cancel_if_killed(hook))
            raise
        except Exception as err:
            self.log.exception("Waiting for Jobdock run %s failed", self.run_id)
            yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(err)})

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the deferred task (mark failed/success, clear)."""
        if self.cancel_on_kill:
            await self._shielded(self._cancel(self._hook()))

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` in a task of its own, for at most CANCEL_SECONDS, and waits for it. The
        triggerer repeats its cancel of a trigger's task until that task has ended, which would
        otherwise interrupt the cancel request on its way to the engine; shielded, the request
        goes on even when this wait is cancelled again. The bound keeps a stuck engine from
        holding up a triggerer that stops."""

        async def bounded() -> None:
            try:
                await asyncio.wait_for(work, timeout=CANCEL_SECONDS)
            except asyncio.TimeoutError:
                self.log.warning("Gave up cancelling Jobdock run %s after %d s", self.run_id, CANCEL_SECONDS)

        task = asyncio.ensure_future(bounded())
        _CANCELS.add(task)
        task.add_done_callback(_CANCELS.discard)
        await asyncio.shield(task)

    async def _cancel_if_killed(self, hook: JobdockHook) -> None:
        if await self.task_was_killed():
            await self._cancel(hook)

    async def _cancel(self, hook: JobdockHook) -> None:
        self.log.info("The task was killed: cancelling Jobdock run %s", self.run_id)
        try:
            if await hook.acancel_run(self.run_id) is None:
                self.log.info("Jobdock run %s had already ended", self.run_id)
        except Exception:
            self.log.exception("Cancelling Jobdock run %s failed", self.run_id)

    def _next_wait(self) -> int | None:
        """Seconds the next status request may wait, or None once the deadline passed."""
        wait = max(1, min(math.ceil(self.poll_interval), MAX_WAIT_SECONDS))
        if self.deadline is None:
            return wait
        remaining = self.deadline - time.time()
        if remaining <= 0:
            return None
        return max(1, min(wait, math.ceil(remaining)))

    async def task_was_killed(self) -> bool:
        """Before Airflow 3.3, whether this trigger is being cancelled because its task
        instance left the deferred state (a user's kill) rather than because the triggerer
        stops. When the state cannot be read, the run is left alone."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            self.log.warning("No task instance on the trigger: leaving Jobdock run %s alone", self.run_id)
            return False
        try:
            state = await _task_state(ti)
        except Exception:
            self.log.exception("Could not read the state of %s: leaving Jobdock run %s alone", ti, self.run_id)
            return False
        state = getattr(state, "value", state)
        self.log.info("Task instance state is %s while the trigger is cancelled", state)
        return state is not None and state != "deferred"


async def _task_state(ti: Any) -> str | None:
    from asgiref.sync import sync_to_async

    if AIRFLOW_V_3_0_PLUS:  # 3.0–3.2: the triggerer asks the API server
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
        )
        return states.get(ti.run_id, {}).get(ti.task_id)
    return await sync_to_async(_task_state_from_database)(ti)


def _task_state_from_database(ti: Any) -> str | None:
    """Airflow 2: the state as the metadata database has it now."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(TaskInstance.state)
            .filter(
                TaskInstance.dag_id == ti.dag_id,
                TaskInstance.task_id == ti.task_id,
                TaskInstance.run_id == ti.run_id,
                TaskInstance.map_index == ti.map_index,
            )
            .scalar()
        )
