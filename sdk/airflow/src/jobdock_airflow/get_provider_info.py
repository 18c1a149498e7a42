"""What Airflow's ProvidersManager learns about this package (entry point
`apache_airflow_provider`): its connection type and the modules it brings."""

from __future__ import annotations

from typing import Any

from jobdock_airflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-jobdock",
        "name": "Jobdock",
        "description": "Run Jobdock jobs (containerised scripts) from Airflow and wait for their runs.",
        "versions": [__version__],
        "connection-types": [{"connection-type": "jobdock", "hook-class-name": "jobdock_airflow.hooks.JobdockHook"}],
        "hooks": [{"integration-name": "Jobdock", "python-modules": ["jobdock_airflow.hooks"]}],
        "operators": [{"integration-name": "Jobdock", "python-modules": ["jobdock_airflow.operators"]}],
        "sensors": [{"integration-name": "Jobdock", "python-modules": ["jobdock_airflow.sensors"]}],
        "triggers": [{"integration-name": "Jobdock", "python-modules": ["jobdock_airflow.triggers"]}],
        "integrations": [{"integration-name": "Jobdock", "tags": ["software"]}],
    }
