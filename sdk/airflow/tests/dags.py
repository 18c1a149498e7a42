"""DAG files for the tests, and what a test reads back after `dag.test()`.

Airflow 3 runs only DAGs it has parsed from its DAGs folder, so each test writes its DAG as a
file there (AIRFLOW__CORE__DAGS_FOLDER, set by the runner) and imports it from that file; the
same file serves `airflow tasks test` in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path
from typing import Any

from jobdock_airflow.compat import AIRFLOW_V_3_0_PLUS

HEADER = """\
import datetime

import pendulum

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

from jobdock_airflow.operators import JobdockRunJobOperator
from jobdock_airflow.sensors import JobdockRunSensor

"""


def write_dag(dag_id: str, tasks: str, **dag_kwargs: Any) -> Path:
    """Writes a DAG file whose DAG `dag_id` holds `tasks` (Python, indented by this function)."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = "".join(f", {key}={value!r}" for key, value in dag_kwargs.items())
    source = (
        HEADER
        + f"with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), "
        + f"catchup=False{kwargs}) as dag:\n"
        + textwrap.indent(textwrap.dedent(tasks).strip() + "\n", "    ")
    )
    path = folder / f"{dag_id}.py"
    path.write_text(source)
    return path


def load_dag(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"jobdock_test_dag_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def run_dag(dag_id: str, tasks: str, **dag_kwargs: Any) -> Any:
    """Writes, loads and runs the DAG once with `dag.test()`; returns the DagRun."""
    return load_dag(write_dag(dag_id, tasks, **dag_kwargs)).test()


def task_instance(dag_run: Any, task_id: str) -> Any:
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = dag_run.get_task_instance(task_id, session=session)
        session.expunge(ti)
        return ti


def state_of(dag_run: Any, task_id: str) -> str:
    state = task_instance(dag_run, task_id).state
    return getattr(state, "value", state)


def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """The XCom `key` that `task_id` pushed in `dag_run`, read from the metadata database."""
    from airflow.utils.session import create_session

    with create_session() as session:
        if AIRFLOW_V_3_0_PLUS:
            from airflow.models.xcom import XComModel

            row = session.scalars(
                XComModel.get_many(run_id=dag_run.run_id, key=key, task_ids=task_id, dag_ids=dag_run.dag_id)
            ).first()
            return None if row is None else XComModel.deserialize_value(row)
        from airflow.models.xcom import XCom

        return XCom.get_one(run_id=dag_run.run_id, key=key, task_id=task_id, dag_id=dag_run.dag_id, session=session)
