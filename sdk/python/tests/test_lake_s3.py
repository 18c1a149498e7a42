"""The data-lake writer on S3, through s3fs, against moto's S3 server running as a local
process (conftest.s3_server)."""

from __future__ import annotations

import gzip
import io
import json
import uuid

import pytest

import jobdock
from conftest import S3
from jobdock import lake

pytestmark = pytest.mark.s3
pytest.importorskip("s3fs")


@pytest.fixture
def bucket(s3_server: S3) -> str:
    name = f"lake-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBDOCK_RUN_ID", "r-s3")


def keys(s3: S3, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def body(s3: S3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_jsonl_gzip_rolling(s3_server: S3, bucket: str) -> None:
    records = [{"id": i, "name": f"order {i}"} for i in range(25)]
    with lake.writer(f"s3://{bucket}/raw", "erp", "orders", gzip=True, max_rows=10,
                     load_date="2026-12-05", storage_options=s3_server.storage_options()) as out:
        out.write_many(records)
    prefix = "raw/erp/orders/load_date=2026-12-05/"
    assert keys(s3_server, bucket) == [f"{prefix}part-r-s3-0000{n}.jsonl.gz" for n in range(3)]
    back = [json.loads(line) for k in keys(s3_server, bucket)
            for line in gzip.decompress(body(s3_server, bucket, k)).splitlines()]
    assert back == records
    assert [f.path for f in out.files] == [f"s3://{bucket}/{k}" for k in keys(s3_server, bucket)]
    assert [f.rows for f in out.files] == [10, 10, 5]


def test_numbering_continues_after_the_objects_already_there(s3_server: S3, bucket: str) -> None:
    for batch in range(2):
        with lake.writer(f"s3://{bucket}", "erp", "orders", max_rows=2, load_date="2026-12-05",
                         storage_options=s3_server.storage_options()) as out:
            out.write_many({"batch": batch, "i": i} for i in range(3))
    names = [k.rsplit("/", 1)[1] for k in keys(s3_server, bucket)]
    assert names == [f"part-r-s3-{n:05d}.jsonl" for n in range(4)]


def test_a_failed_block_uploads_nothing_unfinished(s3_server: S3, bucket: str) -> None:
    with pytest.raises(RuntimeError):
        with lake.writer(f"s3://{bucket}/raw", "erp", "orders", max_rows=3, load_date="2026-12-05",
                         storage_options=s3_server.storage_options()) as out:
            out.write_many({"i": i} for i in range(5))
            raise RuntimeError("source broke")
    assert keys(s3_server, bucket) == ["raw/erp/orders/load_date=2026-12-05/part-r-s3-00000.jsonl"]


def test_parquet_on_s3(s3_server: S3, bucket: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    records = [{"id": i, "amount": i / 4} for i in range(30)]
    with lake.writer(f"s3://{bucket}/raw", "erp", "orders", format="parquet", load_date="2026-12-05",
                     storage_options=s3_server.storage_options()) as out:
        out.write_many(records)
    (key,) = keys(s3_server, bucket)
    assert key == "raw/erp/orders/load_date=2026-12-05/part-r-s3-00000.parquet"
    assert pq.read_table(io.BytesIO(body(s3_server, bucket, key))).to_pylist() == records


def test_a_file_of_several_megabytes(s3_server: S3, bucket: str) -> None:
    records = [{"i": i, "pad": uuid.uuid4().hex * 8} for i in range(30_000)]  # about 8.5 MB
    with lake.writer(f"s3://{bucket}/raw", "erp", "big", load_date="2026-12-05",
                     storage_options=s3_server.storage_options()) as out:
        out.write_many(records)
    (key,) = keys(s3_server, bucket)
    lines = body(s3_server, bucket, key).splitlines()
    assert len(lines) == 30_000 and json.loads(lines[-1]) == records[-1]


def test_a_missing_bucket_is_an_error(s3_server: S3) -> None:
    with pytest.raises((FileNotFoundError, OSError, jobdock.JobdockError)):
        with lake.writer("s3://no-such-bucket-x1/raw", "erp", "orders",
                         storage_options=s3_server.storage_options()) as out:
            out.write({"i": 1})


def test_credentials_and_endpoint_from_the_environment(
    s3_server: S3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the README says for a job: the AWS variables (from the job's secrets), no
    storage_options."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with lake.writer(f"s3://{bucket}/raw", "erp", "orders", load_date="2026-12-05") as out:
            out.write({"from": "env"})
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    (key,) = keys(s3_server, bucket)
    assert json.loads(body(s3_server, bucket, key)) == {"from": "env"}
