"""The DAG of the bench's `airflow` figure (bench/jobdock_bench/airflow.py copies it into its
AIRFLOW_HOME): one DockerOperator task running `true` in the bench's test image, on the local
Docker engine, triggered only from outside (no schedule)."""

from datetime import datetime

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

with DAG("jobdock_bench_true", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    DockerOperator(
        task_id="true",
        image="jobdock-test/busybox:1",  # common.IMAGE, built by ensure_image(); never pulled
        command=["true"],
        docker_url="unix:///var/run/docker.sock",
        force_pull=False,  # the provider pulls only when this is set or the image is missing
        auto_remove="success",  # like `docker run --rm`: removed once it has ended
        mount_tmp_dir=False,  # no bind-mounted temporary directory: a plain `docker run`
        do_xcom_push=False,  # `true` has nothing to pass on
    )
