"""The few names that moved between Airflow 2.10 and 3.x, imported from where this Airflow
keeps them."""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from packaging.version import Version

_AIRFLOW = Version(Version(_airflow_version).base_version)
AIRFLOW_V_3_0_PLUS = _AIRFLOW >= Version("3.0.0")
# From 3.3 the triggerer calls BaseTrigger.on_kill() when a user kills a deferred task.
AIRFLOW_V_3_3_PLUS = _AIRFLOW >= Version("3.3.0")

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
else:
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.models import BaseOperator  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]

__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
]
