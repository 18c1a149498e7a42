"""Raw loads to a data lake: records written as files in a partitioned layout.

    from jobdock import lake
    with lake.writer("s3://acme-lake/raw", source="erp", entity="orders", gzip=True) as out:
        for order in orders:
            out.write(order)
    # s3://acme-lake/raw/erp/orders/load_date=2026-12-05/part-<run id>-00000.jsonl.gz

The layout is `<root>/<source>/<entity>/load_date=YYYY-MM-DD/part-<run id>-<n>.<ext>`:
the load date is the day the writer was opened (UTC) unless given, the run id is
`JOBDOCK_RUN_ID` (outside a run, `local-<time>-<random>`), and `n` counts the files of the
run in that folder from 00000. A writer never overwrites: it continues after the highest
`n` already there for the run, so several writers in one run (one after the other) and a
retried attempt each add files. Raw files are append-only; de-duplicate downstream.

Formats: `jsonl` (JSON lines, UTF-8; `gzip=True` makes `.jsonl.gz`) or `parquet` (needs
`pyarrow`; `gzip=True` uses gzip inside the file instead of snappy). A new file is started
after `max_rows` records or once a file reaches `max_bytes` (the bytes written to it, after
compression; approximate, the compressor buffers).

Each file is complete or absent, never half-written: a file is written to a local temporary
file first, then moved into place (`os.replace` on a local path, after an fsync) or
uploaded in one put (object stores, whose puts are atomic: a reader sees the whole object
or none). On other fsspec filesystems it is uploaded under a temporary name and renamed. If
the block raises, the file being written is discarded and the files already finished stay.

Where: a local path (or `file://`) needs nothing. `s3://bucket/prefix` needs `s3fs`,
`az://container/prefix` needs `adlfs` (`pip install 'jobdock[lake]'`); credentials and
endpoints are `storage_options` (passed to fsspec) or the libraries' usual environment
variables (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_CONNECTION_STRING`, ...). Any other fsspec
URL works the same way.
"""

from __future__ import annotations

import datetime as _dt
import os
import posixpath
import re
import secrets
import tempfile
from types import TracebackType
from typing import IO, Any, Iterable, Mapping, Optional, Type, Union

from . import log
from ._lakefiles import LakeFile, JsonlPart, ParquetPart, Part, pyarrow_modules
from .errors import LakeError

__all__ = ["writer", "LakeWriter", "LakeFile"]

DEFAULT_MAX_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_ROWS = 1_000_000
# Object stores whose single put is atomic: a file goes straight to its final name.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def writer(
    root: str,
    source: str,
    entity: str,
    *,
    format: str = "jsonl",
    gzip: bool = False,
    max_rows: Optional[int] = DEFAULT_MAX_ROWS,
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
    load_date: Union[_dt.date, str, None] = None,
    run_id: Optional[str] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    schema: Any = None,
) -> "LakeWriter":
    """A writer of `source`/`entity` records under `root` (see the module's documentation).
    `schema` is a `pyarrow.Schema` for Parquet (else taken from the first rows)."""
    return LakeWriter(
        root, source, entity, format=format, gzip=gzip, max_rows=max_rows, max_bytes=max_bytes,
        load_date=load_date, run_id=run_id, storage_options=storage_options, schema=schema,
    )


class LakeWriter:
    """Writes records into rolling files; use it in a `with` block, or call `close()` (and
    `abort()` on failure). Not safe to share between threads."""

    def __init__(
        self, root: str, source: str, entity: str, *, format: str = "jsonl", gzip: bool = False,
        max_rows: Optional[int] = DEFAULT_MAX_ROWS, max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
        load_date: Union[_dt.date, str, None] = None, run_id: Optional[str] = None,
        storage_options: Optional[Mapping[str, Any]] = None, schema: Any = None,
    ) -> None:
        if format not in ("jsonl", "parquet"):
            raise ValueError(f"format must be 'jsonl' or 'parquet', not {format!r}")
        if max_rows is not None and max_rows < 1 or max_bytes is not None and max_bytes < 1:
            raise ValueError("max_rows and max_bytes must be positive (or None)")
        self.format = format
        self.gzip = gzip
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.schema = schema
        if format == "parquet":
            pyarrow_modules()  # fail now, not at the first record
        self.load_date = _load_date(load_date)
        self.run_id = _SAFE.sub("_", run_id or os.environ.get("JOBDOCK_RUN_ID") or _local_run_id())
        self._store = _store(root, storage_options)
        self.folder = self._store.under_root(
            _segment("source", source), _segment("entity", entity), f"load_date={self.load_date}"
        )
        self.files: list[LakeFile] = []
        self.rows = 0
        self._next_n: Optional[int] = None
        self._part: Optional[Part] = None
        self._closed = False

    def __enter__(self) -> "LakeWriter":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    def write(self, record: Any) -> None:
        """Adds one record (a dict; for JSON lines any JSON value). Dates and times are
        written as ISO 8601 text, decimals and UUIDs as text."""
        if self._closed:
            raise LakeError("this lake writer is closed")
        if self._part is None:
            self._part = self._open_part()
        self._part.add(record)
        self.rows += 1
        if (self.max_rows is not None and self._part.rows >= self.max_rows) or (
            self.max_bytes is not None and self._part.size() >= self.max_bytes
        ):
            self._finish_part()

    def write_many(self, records: Iterable[Any]) -> int:
        """Adds every record of `records`; returns how many."""
        count = 0
        for record in records:
            self.write(record)
            count += 1
        return count

    def close(self) -> list[LakeFile]:
        """Finishes the file being written; returns every file this writer wrote."""
        if not self._closed:
            self._closed = True
            self._finish_part()
        return list(self.files)

    def abort(self) -> None:
        """Discards the file being written (finished files stay) and closes the writer."""
        self._closed = True
        if self._part is not None:
            part, self._part = self._part, None
            part.discard()

    def _open_part(self) -> "Part":
        if self._next_n is None:
            self._next_n = self._first_free_n()
        ext = ".parquet" if self.format == "parquet" else ".jsonl.gz" if self.gzip else ".jsonl"
        name = f"part-{self.run_id}-{self._next_n:05d}{ext}"
        self._next_n += 1
        final = f"{self.folder}/{name}"
        if self.format == "parquet":
            return ParquetPart(self._store, final, self.gzip, self.schema, self.max_rows)
        return JsonlPart(self._store, final, self.gzip)

    def _finish_part(self) -> None:
        if self._part is None:
            return
        part, self._part = self._part, None
        done = part.commit()
        if self.format == "parquet" and self.schema is None:
            self.schema = part.schema()  # later files keep the first file's columns
        self.files.append(done)
        log.info("wrote lake file", path=done.path, rows=done.rows, bytes=done.bytes)

    def _first_free_n(self) -> int:
        pattern = re.compile(rf"^part-{re.escape(self.run_id)}-(\d+)\.")
        taken = [int(m.group(1)) for name in self._store.names(self.folder)
                 for m in [pattern.match(name)] if m]
        return max(taken) + 1 if taken else 0


class _Store:
    """Where files go: a local directory, or an fsspec filesystem."""

    def __init__(self, root: str, fs: Any = None) -> None:
        self.root = root.rstrip("/") or "/"
        self.fs = fs
        protocol = getattr(fs, "protocol", "file") if fs is not None else "file"
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self.atomic_put = bool(protocols & ATOMIC_PUT)

    def under_root(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def url(self, path: str) -> str:
        if self.fs is None:
            return path
        return self.fs.unstrip_protocol(path)  # type: ignore[no-any-return]

    def names(self, folder: str) -> list[str]:
        try:
            if self.fs is None:
                return os.listdir(folder)
            self.fs.invalidate_cache(folder)
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def temp(self, final: str) -> tuple[str, IO[bytes]]:
        """A local temporary file for `final`: beside it for a local path (so that the move
        is a rename), in the temporary directory otherwise."""
        if self.fs is None:
            folder, name = os.path.split(final)
            os.makedirs(folder, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        else:
            fd, path = tempfile.mkstemp(prefix="jobdock-lake-", suffix=".tmp")
        return path, os.fdopen(fd, "wb")

    def publish(self, temp: str, final: str) -> None:
        if self.fs is None:
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temp, final)
            _fsync_dir(os.path.dirname(final))
            return
        try:
            if self.atomic_put:
                self.fs.put_file(temp, final)
            else:
                staged = f"{final}.{secrets.token_hex(4)}.tmp"
                self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
                self.fs.put_file(temp, staged)
                self.fs.mv(staged, final)
        finally:
            os.unlink(temp)


def _store(root: str, storage_options: Optional[Mapping[str, Any]]) -> _Store:
    if "://" not in root or root.startswith("file://"):
        path = root[len("file://"):] if root.startswith("file://") else root
        return _Store(os.path.abspath(path))
    try:
        import fsspec
    except ImportError:
        raise LakeError(f"writing to {root.split('://')[0]}:// needs fsspec and its driver: "
                        "pip install 'jobdock[lake]'") from None
    try:
        fs, path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
    except ImportError as err:
        raise LakeError(f"writing to {root.split('://')[0]}:// needs a driver: {err} "
                        "(pip install 'jobdock[lake]')") from None
    return _Store(path, fs)


def _segment(what: str, value: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "=" in value:
        raise ValueError(f"{what} must be a plain name (no '/', '\\', '='), not {value!r}")
    return value


def _load_date(value: Union[_dt.date, str, None]) -> str:
    if value is None:
        return _dt.datetime.now(_dt.timezone.utc).date().isoformat()
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    try:
        return _dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"load_date must be YYYY-MM-DD, not {value!r}") from None


_LOCAL_RUN_ID = ""


def _local_run_id() -> str:
    """Outside a run: one id for the whole process, so that its writers number on."""
    global _LOCAL_RUN_ID
    if not _LOCAL_RUN_ID:
        _LOCAL_RUN_ID = f"local-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    return _LOCAL_RUN_ID


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
