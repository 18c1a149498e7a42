"""The data-lake writer on the local filesystem and through fsspec (`memory://`): layout,
formats, rolling, numbering that never overwrites, and files that are whole or absent."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import jobdock
from jobdock import lake

SDK_SRC = Path(__file__).resolve().parents[1] / "src"
NAME = re.compile(r"^part-(?P<run>[A-Za-z0-9_.-]+)-(?P<n>\d{5})\.(?P<ext>jsonl|jsonl\.gz|parquet)$")


def read_jsonl(path: Path) -> list[dict]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.decode().splitlines()]


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


@pytest.fixture
def run_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JOBDOCK_RUN_ID", "r-2f9c")
    return "r-2f9c"


def test_layout_and_content(tmp_path: Path, run_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    records = [{"id": i, "name": f"ö {i}"} for i in range(5)]
    with lake.writer(str(tmp_path), "erp", "orders", load_date="2026-12-05") as out:
        out.write_many(records)
    folder = tmp_path / "erp" / "orders" / "load_date=2026-12-05"
    assert [p.name for p in folder.iterdir()] == ["part-r-2f9c-00000.jsonl"]
    assert read_jsonl(folder / "part-r-2f9c-00000.jsonl") == records
    assert out.files == [lake.LakeFile(str(folder / "part-r-2f9c-00000.jsonl"), 5,
                                       (folder / "part-r-2f9c-00000.jsonl").stat().st_size)]
    assert out.rows == 5
    assert 'msg="wrote lake file"' in capsys.readouterr().out


def test_the_load_date_defaults_to_today_utc(tmp_path: Path, run_env: str) -> None:
    with lake.writer(str(tmp_path), "erp", "orders") as out:
        out.write({"a": 1})
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert (tmp_path / "erp" / "orders" / f"load_date={today}").is_dir()
    with lake.writer(f"file://{tmp_path}", "erp", "orders", load_date=dt.date(2020, 2, 29)) as out:
        out.write({"a": 1})
    assert (tmp_path / "erp" / "orders" / "load_date=2020-02-29").is_dir()


def test_gzip(tmp_path: Path, run_env: str) -> None:
    records = [{"id": i, "text": "x" * 100} for i in range(200)]
    with lake.writer(str(tmp_path), "erp", "orders", gzip=True, load_date="2026-01-01") as out:
        out.write_many(records)
    (path,) = visible(tmp_path / "erp/orders/load_date=2026-01-01")
    assert path.name == "part-r-2f9c-00000.jsonl.gz"
    assert read_jsonl(path) == records
    assert path.stat().st_size < 200 * 100 / 5  # it really is compressed


def test_rolling_by_rows(tmp_path: Path, run_env: str) -> None:
    with lake.writer(str(tmp_path), "s", "e", max_rows=10, load_date="2026-01-01") as out:
        out.write_many({"i": i} for i in range(25))
    files = visible(tmp_path / "s/e/load_date=2026-01-01")
    assert [f.name for f in files] == [f"part-r-2f9c-0000{n}.jsonl" for n in range(3)]
    assert [len(read_jsonl(f)) for f in files] == [10, 10, 5]
    assert [r["i"] for f in files for r in read_jsonl(f)] == list(range(25))
    assert [f.rows for f in out.files] == [10, 10, 5]


@pytest.mark.parametrize("use_gzip", [False, True])
def test_rolling_by_size(tmp_path: Path, run_env: str, use_gzip: bool) -> None:
    # random hex: gzip halves it and no more, so that the compressed size grows steadily
    records = [{"payload": os.urandom(300).hex()} for _ in range(2000)]
    with lake.writer(str(tmp_path), "s", "e", max_bytes=200_000, gzip=use_gzip,
                     load_date="2026-01-01") as out:
        out.write_many(records)
    files = visible(tmp_path / "s/e/load_date=2026-01-01")
    assert len(files) >= 3
    assert [r for f in files for r in read_jsonl(f)] == records
    # a file stops at the first record past the limit; gzip's compressor holds back at
    # most a few tens of kilobytes, so its files end a little later
    slack = 64 * 1024 if use_gzip else 700
    sizes = [f.stat().st_size for f in files]
    assert all(size <= 200_000 + slack for size in sizes)
    assert all(size >= 200_000 for size in sizes[:-1])


def test_writers_never_overwrite_they_number_on(tmp_path: Path, run_env: str) -> None:
    for batch in range(3):
        with lake.writer(str(tmp_path), "s", "e", max_rows=2, load_date="2026-01-01") as out:
            out.write_many({"batch": batch, "i": i} for i in range(3))
    names = [f.name for f in visible(tmp_path / "s/e/load_date=2026-01-01")]
    assert names == [f"part-r-2f9c-{n:05d}.jsonl" for n in range(6)]
    # another run's files do not count
    with lake.writer(str(tmp_path), "s", "e", run_id="other", load_date="2026-01-01") as out:
        out.write({"x": 1})
    assert (tmp_path / "s/e/load_date=2026-01-01/part-other-00000.jsonl").exists()


def test_no_record_no_file(tmp_path: Path, run_env: str) -> None:
    with lake.writer(str(tmp_path), "s", "e") as out:
        pass
    assert out.files == [] and not (tmp_path / "s").exists()


def test_a_failing_block_keeps_finished_files_and_discards_the_open_one(tmp_path: Path, run_env: str) -> None:
    with pytest.raises(RuntimeError):
        with lake.writer(str(tmp_path), "s", "e", max_rows=3, load_date="2026-01-01") as out:
            out.write_many({"i": i} for i in range(5))
            raise RuntimeError("source broke")
    folder = tmp_path / "s/e/load_date=2026-01-01"
    assert [p.name for p in folder.iterdir()] == ["part-r-2f9c-00000.jsonl"]  # no temp left
    assert len(read_jsonl(folder / "part-r-2f9c-00000.jsonl")) == 3
    with pytest.raises(jobdock.LakeError, match="closed"):
        out.write({"i": 9})


def test_a_record_that_is_not_json_aborts_cleanly(tmp_path: Path, run_env: str) -> None:
    with pytest.raises(TypeError, match="object cannot be written as JSON"):
        with lake.writer(str(tmp_path), "s", "e") as out:
            out.write({"ok": 1})
            out.write({"bad": object()})
    assert list((tmp_path / "s/e").rglob("*")) == [next((tmp_path / "s/e").iterdir())]  # the folder only


def test_json_types(tmp_path: Path, run_env: str) -> None:
    u = uuid.uuid4()
    with lake.writer(str(tmp_path), "s", "e", load_date="2026-01-01") as out:
        out.write({"at": dt.datetime(2026, 12, 5, 7, 30, tzinfo=dt.timezone.utc), "day": dt.date(2026, 1, 2),
                   "amount": decimal.Decimal("12.30"), "id": u, "tags": {"a"}})
        out.write([1, "a list is a JSON value too"])
    rows = read_jsonl(visible(tmp_path / "s/e/load_date=2026-01-01")[0])
    assert rows[0] == {"at": "2026-12-05T07:30:00+00:00", "day": "2026-01-02", "amount": "12.30",
                       "id": str(u), "tags": ["a"]}


def test_the_file_appears_whole_or_not_at_all(tmp_path: Path, run_env: str) -> None:
    """While a file is written it exists only under a hidden temporary name; a process
    killed mid-file leaves no file under a part name."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(SDK_SRC)!r})
        from jobdock import lake
        w = lake.writer({str(tmp_path)!r}, "s", "e", max_rows=1000, load_date="2026-01-01")
        for i in range(1500):
            w.write({{"i": i, "pad": "x" * 1000}})
            if i == 1200:
                print("mid-file", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JOBDOCK_RUN_ID": "r-killed"}, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "mid-file":
                break
        folder = tmp_path / "s/e/load_date=2026-01-01"
        names = sorted(p.name for p in folder.iterdir())
        assert names[0].startswith(".part-r-killed-00001.jsonl.") and names[0].endswith(".tmp")
        assert names[1:] == ["part-r-killed-00000.jsonl"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (done,) = visible(folder)
    assert len(read_jsonl(done)) == 1000  # the finished file is complete


def test_parquet(tmp_path: Path, run_env: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    records = [{"id": i, "name": f"n{i}", "amount": i * 1.5, "ok": i % 2 == 0, "note": None} for i in range(25)]
    with lake.writer(str(tmp_path), "erp", "orders", format="parquet", max_rows=10,
                     load_date="2026-01-01") as out:
        out.write_many(records)
    files = visible(tmp_path / "erp/orders/load_date=2026-01-01")
    assert [f.name for f in files] == [f"part-r-2f9c-0000{n}.parquet" for n in range(3)]
    back = [row for f in files for row in pq.read_table(f).to_pylist()]
    assert back == records
    assert pq.read_metadata(files[0]).row_group(0).column(0).compression == "SNAPPY"


def test_parquet_gzip_and_an_explicit_schema(tmp_path: Path, run_env: str) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    schema = pa.schema([("id", pa.int64()), ("note", pa.string())])
    with lake.writer(str(tmp_path), "s", "e", format="parquet", gzip=True, schema=schema,
                     load_date="2026-01-01") as out:
        out.write({"id": 1, "note": None})  # null in the first rows: the schema says string
        out.write({"id": 2, "note": "later"})
    (path,) = visible(tmp_path / "s/e/load_date=2026-01-01")
    table = pq.read_table(path)
    assert table.schema == schema and table.to_pylist()[1] == {"id": 2, "note": "later"}
    assert pq.read_metadata(path).row_group(0).column(0).compression == "GZIP"


def test_parquet_refuses_fields_its_schema_lacks(tmp_path: Path, run_env: str) -> None:
    pytest.importorskip("pyarrow")
    with pytest.raises(jobdock.LakeError, match="fields the Parquet schema lacks: surprise"):
        with lake.writer(str(tmp_path), "s", "e", format="parquet", max_rows=2) as out:
            out.write_many([{"id": 1}, {"id": 2}, {"id": 3, "surprise": True}])
    with pytest.raises(jobdock.LakeError, match="must be a dict"):
        with lake.writer(str(tmp_path), "s", "e", format="parquet") as out:
            out.write([1, 2])


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(jobdock.LakeError, match=r"pip install 'jobdock\[parquet\]'"):
        lake.writer(str(tmp_path), "s", "e", format="parquet")


def test_an_object_store_without_fsspec_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(jobdock.LakeError, match=r"s3:// needs fsspec.*pip install 'jobdock\[lake\]'"):
        lake.writer("s3://bucket/raw", "s", "e")


def test_azure_without_adlfs_says_what_to_install() -> None:
    # adlfs is not in the test environment: Azure Blob is not tested here (README)
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("adlfs") is not None:
        pytest.skip("adlfs is installed")
    with pytest.raises(jobdock.LakeError, match=r"az:// needs a driver: .*adlfs.*jobdock\[lake\]"):
        lake.writer("az://container/raw", "s", "e", storage_options={"account_name": "x"})


def test_through_fsspec(run_env: str) -> None:
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://lake-{uuid.uuid4().hex[:6]}"
    with lake.writer(root, "erp", "orders", max_rows=2, gzip=True, load_date="2026-01-01") as out:
        out.write_many({"i": i} for i in range(3))
    fs = fsspec.filesystem("memory")
    folder = root[len("memory://"):] + "/erp/orders/load_date=2026-01-01"
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder, detail=False))
    assert names == ["part-r-2f9c-00000.jsonl.gz", "part-r-2f9c-00001.jsonl.gz"]
    assert out.files[0].path == f"memory:///{folder.lstrip('/')}/part-r-2f9c-00000.jsonl.gz"
    rows = [json.loads(x) for n in names for x in gzip.decompress(fs.cat(f"{folder}/{n}")).splitlines()]
    assert rows == [{"i": 0}, {"i": 1}, {"i": 2}]


@pytest.mark.parametrize("args", [("", "e"), ("s", ""), ("../x", "e"), ("s", "a/b"), ("s", "k=v")])
def test_source_and_entity_are_plain_names(tmp_path: Path, args: tuple) -> None:
    with pytest.raises(ValueError):
        lake.writer(str(tmp_path), *args)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lake.writer(str(tmp_path), "s", "e", load_date="05/12/2026")
    with pytest.raises(ValueError, match="format"):
        lake.writer(str(tmp_path), "s", "e", format="csv")
    with pytest.raises(ValueError):
        lake.writer(str(tmp_path), "s", "e", max_rows=0)


def test_outside_a_run_one_local_id_per_process(tmp_path: Path) -> None:
    with lake.writer(str(tmp_path), "s", "e", load_date="2026-01-01") as a:
        a.write({"n": 1})
    with lake.writer(str(tmp_path), "s", "e", load_date="2026-01-01") as b:
        b.write({"n": 2})
    names = [p.name for p in visible(tmp_path / "s/e/load_date=2026-01-01")]
    matches = [NAME.match(n) for n in names]
    assert all(matches) and len({m["run"] for m in matches if m}) == 1
    assert [m["n"] for m in matches if m] == ["00000", "00001"]
    assert names[0].startswith("part-local-")


def test_run_ids_are_made_safe_for_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBDOCK_RUN_ID", "run/../1 x")
    with lake.writer(str(tmp_path), "s", "e", load_date="2026-01-01") as out:
        out.write({})
    assert [p.name for p in visible(tmp_path / "s/e/load_date=2026-01-01")] == ["part-run_.._1_x-00000.jsonl"]
