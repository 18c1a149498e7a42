"""Structured log lines for the run's log: one line per event, in logfmt.

    from jobdock import log
    log.info("loaded page", page=3, rows=120)
    # level=info msg="loaded page" page=3 rows=120

The module itself is the shared logger; `log.bind(**fields)` makes one that adds fields to
each of its lines, `log.set_level("debug")` changes the threshold.

Each line is `level=<level> msg=<message>` followed by the fields in the order given.
A value is written bare when it is a plain word (`rows=120`, `ok=true`), else in double
quotes with `\\`, `"`, newlines and tabs escaped (`msg="two\\nlines"`), so that every event
is exactly one line: the engine stores output line by line and stamps each with its time,
so the SDK writes no timestamp of its own. `None` is `null`, booleans `true`/`false`,
lists and dicts compact JSON, anything else its `str()`.

Lines go to standard output (flushed at once, so they interleave correctly with `print`).
Levels are debug < info < warning < error; lines below `JOBDOCK_LOG_LEVEL` (default
`info`) are dropped. Secret values read with `jobdock.secret()` and the run token are
replaced by `***`.

The standard `logging` module can write the same lines, for libraries that log through it:

    import logging
    logging.basicConfig(level=logging.INFO, handlers=[log.handler()])
"""
# The line-protocol writer (`write_line`) lives here too: `jobdock.progress` shares its lock,
# so that log and progress lines written from several threads never interleave.

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import threading
import traceback
from typing import IO, Any, Optional

from . import _redact

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_ALIASES = {"warn": "warning", "critical": "error", "fatal": "error"}

_write_lock = threading.Lock()


def write_line(line: str, stream: Optional[IO[str]] = None) -> None:
    """Writes one protocol or log line to `stream` (standard output by default, looked up at
    each call) and flushes it. The line must already be a single line."""
    out = stream if stream is not None else sys.stdout
    with _write_lock:
        out.write(line + "\n")
        out.flush()


def escape(text: str) -> str:
    """`text` on one line: backslash, newline, carriage return and tab escaped."""
    return (
        text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


def format_value(value: Any) -> str:
    """One logfmt value (see the module's documentation)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        text = value.isoformat()
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    elif isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}"
    else:
        text = str(value)
    if text and all(c.isprintable() and c not in ' ="\\' for c in text):
        return text
    return '"' + escape(text).replace('"', '\\"') + '"'


def _format_key(key: str) -> str:
    cleaned = "".join(c if c.isprintable() and c not in ' ="\\' else "_" for c in key)
    return cleaned or "_"


def _level_from_env() -> int:
    name = (os.environ.get("JOBDOCK_LOG_LEVEL") or "info").strip().lower()
    name = _ALIASES.get(name, name)
    return LEVELS.get(name, LEVELS["info"])


class Logger:
    """Writes logfmt lines to `stream` (standard output when None) at or above `level`
    (`JOBDOCK_LOG_LEVEL` when None), with `fields` on every line."""

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        level: Optional[str] = None,
        fields: Optional[dict[str, Any]] = None,
    ) -> None:
        self._stream = stream
        self._level: Optional[int] = None if level is None else _parse_level(level)
        self._fields = dict(fields or {})

    @property
    def level(self) -> str:
        """The lowest level written: `JOBDOCK_LOG_LEVEL` unless set here."""
        number = self._level if self._level is not None else _level_from_env()
        return next(k for k, v in LEVELS.items() if v == number)

    @level.setter
    def level(self, name: str) -> None:
        self._level = _parse_level(name)

    def enabled(self, level: str) -> bool:
        threshold = self._level if self._level is not None else _level_from_env()
        return _parse_level(level) >= threshold

    def bind(self, **fields: Any) -> "Logger":
        """A logger writing to the same place with `fields` added to every line."""
        child = Logger(self._stream, None, {**self._fields, **fields})
        child._level = self._level
        return child

    def debug(self, msg: str, /, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, /, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, /, **fields: Any) -> None:
        self.log("warning", msg, **fields)

    warn = warning

    def error(self, msg: str, /, **fields: Any) -> None:
        self.log("error", msg, **fields)

    def exception(self, msg: str, /, **fields: Any) -> None:
        """An error line with the exception being handled as `error=` and its traceback as
        `traceback=` (escaped onto the one line)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            fields.setdefault("error", exc)
            fields.setdefault("traceback", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
        self.log("error", msg, **fields)

    def log(self, level: str, msg: str, /, **fields: Any) -> None:
        """Writes one line at `level` (debug, info, warning, error) unless it is below the
        logger's level."""
        name = _ALIASES.get(level.lower(), level.lower())
        if not self.enabled(name):
            return
        parts = [f"level={name}", f"msg={format_value(str(msg))}"]
        for key, value in {**self._fields, **fields}.items():
            key = _format_key(str(key))
            if key in ("level", "msg"):  # the line's own keys stay unambiguous
                key += "_"
            parts.append(f"{key}={format_value(value)}")
        write_line(_redact.mask(" ".join(parts)), self._stream)

    def handler(self, level: int = logging.NOTSET) -> logging.Handler:
        """A `logging.Handler` that writes the standard library's records as this logger's
        lines, with the record's logger name as `logger=`."""
        return _Handler(self, level)

    def __repr__(self) -> str:
        return f"<jobdock.log.Logger level={self.level} fields={sorted(self._fields)}>"


def _parse_level(name: str) -> int:
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LEVELS:
        raise ValueError(f"unknown log level {name!r}: use one of {', '.join(LEVELS)}")
    return LEVELS[key]


class _Handler(logging.Handler):
    def __init__(self, logger: Logger, level: int) -> None:
        super().__init__(level)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.ERROR:
                level = "error"
            elif record.levelno >= logging.WARNING:
                level = "warning"
            elif record.levelno >= logging.INFO:
                level = "info"
            else:
                level = "debug"
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                fields["error"] = exc
                fields["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._logger.log(level, record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - a handler must not raise
            self.handleError(record)


# The module is the shared logger: `from jobdock import log; log.info("...", key=value)`.
_default = Logger()


def debug(msg: str, /, **fields: Any) -> None:
    """A debug line (dropped unless `JOBDOCK_LOG_LEVEL=debug` or `set_level("debug")`)."""
    _default.log("debug", msg, **fields)


def info(msg: str, /, **fields: Any) -> None:
    """An info line: `level=info msg=... key=value ...`."""
    _default.log("info", msg, **fields)


def warning(msg: str, /, **fields: Any) -> None:
    """A warning line."""
    _default.log("warning", msg, **fields)


warn = warning


def error(msg: str, /, **fields: Any) -> None:
    """An error line."""
    _default.log("error", msg, **fields)


def exception(msg: str, /, **fields: Any) -> None:
    """An error line with the exception being handled (`error=`, `traceback=`); call it in
    an `except` block."""
    _default.exception(msg, **fields)


def bind(**fields: Any) -> Logger:
    """A logger that adds `fields` to each of its lines: `orders_log = log.bind(entity="orders")`."""
    return _default.bind(**fields)


def set_level(level: str) -> None:
    """Sets the lowest level written by the shared logger (and loggers bound from it later),
    instead of `JOBDOCK_LOG_LEVEL`."""
    _default.level = level


def handler(level: int = logging.NOTSET) -> logging.Handler:
    """A `logging.Handler` writing the standard library's records as jobdock lines."""
    return _default.handler(level)
