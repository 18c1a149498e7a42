"""Apache Airflow provider for Jobdock: trigger a Jobdock job's run and wait for its end."""

__version__ = "0.1.0"
