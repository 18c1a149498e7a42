"""The file formats of the data-lake writer (`jobdock.lake`): JSON lines (optionally
gzipped) and Parquet. A part is written to a local temporary file, counted as it grows (for
rolling by size), and handed to its store to be published whole or discarded."""

from __future__ import annotations

import datetime as _dt
import decimal
import gzip as _gzip
import json
import os
import uuid
from dataclasses import dataclass
from typing import IO, Any, Mapping, Optional, Protocol

from .errors import LakeError

PARQUET_ROW_GROUP = 10_000


@dataclass(frozen=True)
class LakeFile:
    """A finished file: its full path or URL, its records and its size in bytes."""

    path: str
    rows: int
    bytes: int


class Store(Protocol):
    def temp(self, final: str) -> tuple[str, IO[bytes]]: ...
    def publish(self, temp: str, final: str) -> None: ...
    def url(self, path: str) -> str: ...


class Counting:
    """A binary file that counts what goes through it (for rolling by size)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.count += len(data)
        return len(data)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class Part:
    def __init__(self, store: Store, final: str) -> None:
        self.store = store
        self.final = final
        self.temp, self._raw = store.temp(final)
        self.out = Counting(self._raw)
        self.rows = 0

    def add(self, record: Any) -> None:
        raise NotImplementedError

    def size(self) -> int:
        return self.out.count

    def schema(self) -> Any:
        return None

    def _end(self) -> None:
        """Writes what is buffered and the format's trailer."""

    def commit(self) -> LakeFile:
        try:
            self._end()
            self._raw.close()
            size = os.path.getsize(self.temp)
            self.store.publish(self.temp, self.final)
        except BaseException:
            self.discard()
            raise
        return LakeFile(self.store.url(self.final), self.rows, size)

    def discard(self) -> None:
        self._raw.close()
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


class JsonlPart(Part):
    def __init__(self, store: Store, final: str, gzip: bool) -> None:
        super().__init__(store, final)
        self._zip = _gzip.GzipFile(fileobj=self.out, mode="wb", mtime=0) if gzip else None

    def add(self, record: Any) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=json_default,
                          allow_nan=False).encode() + b"\n"
        (self._zip or self.out).write(line)
        self.rows += 1

    def _end(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def discard(self) -> None:
        self._zip = None
        super().discard()


class ParquetPart(Part):
    def __init__(self, store: Store, final: str, gzip: bool, schema: Any, max_rows: Optional[int]) -> None:
        super().__init__(store, final)
        self._pa, self._pq = pyarrow_modules()
        self._codec = "gzip" if gzip else "snappy"
        self._schema = schema
        self._group = min(PARQUET_ROW_GROUP, max_rows or PARQUET_ROW_GROUP)
        self._buffer: list[Mapping[str, Any]] = []
        self._writer: Any = None

    def add(self, record: Any) -> None:
        if not isinstance(record, Mapping):
            raise LakeError(f"a Parquet record must be a dict, not {type(record).__name__}")
        self._buffer.append(record)
        self.rows += 1
        if len(self._buffer) >= self._group:
            self._flush()

    def schema(self) -> Any:
        return self._schema

    def _flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            if self._schema is None:
                self._schema = self._pa.Table.from_pylist(rows).schema
            extra = sorted({k for r in rows for k in r} - set(self._schema.names))
            if extra:
                raise LakeError(f"records have fields the Parquet schema lacks: {', '.join(map(str, extra))} "
                                "(pass schema= naming every field, or write jsonl)")
            table = self._pa.Table.from_pylist(rows, schema=self._schema)
        except (self._pa.ArrowInvalid, self._pa.ArrowTypeError, TypeError) as err:
            raise LakeError(f"records do not fit the Parquet schema {self._schema}: {err} "
                            "(pass schema= with the right types)") from None
        if self._writer is None:
            sink = self._pa.PythonFile(self.out, mode="w")
            self._writer = self._pq.ParquetWriter(sink, self._schema, compression=self._codec)
        self._writer.write_table(table)

    def size(self) -> int:
        return self.out.count

    def _end(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()


def json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON")


def pyarrow_modules() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise LakeError("Parquet needs pyarrow: pip install 'jobdock[parquet]' (or use format='jsonl')") from None
    return pyarrow, pyarrow.parquet
