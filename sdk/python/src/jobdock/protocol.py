"""Progress and liveness on the engine's line protocol.

The engine reads the run's output line by line. Two kinds of lines mean something to it:

    ::jobdock::progress <done>/<total> <message>    (or `<done> <message>`; message optional)
    ::jobdock::heartbeat

`progress()` and `heartbeat()` print them on standard output and flush at once. Both are
throttled, so that calling them in a tight loop costs nothing and floods no log:

- `progress()` prints at most one line per `PROGRESS_INTERVAL` seconds (1 s), except that
  the first report, a report with `done >= total` (the end) and a forced one always print.
  The engine keeps the latest report at most every 5 s.
- `heartbeat()` prints at most one line per `HEARTBEAT_INTERVAL` seconds (5 s).

`heartbeats(every=60)` heartbeats from a background thread while a long, silent call runs
(a big query, an upload), so that the run is not reported stalled.
"""

from __future__ import annotations

import contextlib
import decimal
import math
import numbers
import operator
import threading
import time
from typing import Callable, Iterator, Optional, Union

from . import _redact
from .log import escape, write_line

PROGRESS_MARKER = "::jobdock::progress"
HEARTBEAT_LINE = "::jobdock::heartbeat"

#: Least seconds between two printed progress lines (the end and forced ones excepted).
PROGRESS_INTERVAL = 1.0
#: Least seconds between two printed heartbeats.
HEARTBEAT_INTERVAL = 5.0

_clock: Callable[[], float] = time.monotonic
_lock = threading.Lock()
_last_progress: Optional[float] = None
_last_heartbeat: Optional[float] = None

Number = Union[int, float]


def progress(
    done: Number, total: Optional[Number] = None, message: str = "", *, force: bool = False
) -> bool:
    """Reports that `done` of `total` units are done (`total` may be unknown: None), with an
    optional one-line `message` (newlines are escaped). Returns True when a line was
    printed, False when throttled.

        for i, row in enumerate(rows, 1):
            ...
            jobdock.progress(i, len(rows), "loading orders")

    Numbers are whole: a float is rounded down. Negative numbers raise ValueError."""
    global _last_progress
    done_n = _count("done", done)
    total_n = None if total is None else _count("total", total)
    now = _clock()
    with _lock:
        due = (
            force
            or _last_progress is None
            or now - _last_progress >= PROGRESS_INTERVAL
            or (total_n is not None and done_n >= total_n)
        )
        if not due:
            return False
        _last_progress = now
    amount = str(done_n) if total_n is None else f"{done_n}/{total_n}"
    line = f"{PROGRESS_MARKER} {amount}"
    if message:
        line += " " + escape(str(message))
    write_line(_redact.mask(line))
    return True


def heartbeat(*, force: bool = False) -> bool:
    """Tells the engine the script is alive (`::jobdock::heartbeat`), at most once per
    `HEARTBEAT_INTERVAL` unless `force`. Returns True when a line was printed."""
    global _last_heartbeat
    now = _clock()
    with _lock:
        if not force and _last_heartbeat is not None and now - _last_heartbeat < HEARTBEAT_INTERVAL:
            return False
        _last_heartbeat = now
    write_line(HEARTBEAT_LINE)
    return True


@contextlib.contextmanager
def heartbeats(every: float = 60.0) -> Iterator[None]:
    """Prints a heartbeat now and then every `every` seconds from a background thread until
    the block ends:

        with jobdock.heartbeats(every=60):
            cursor.execute(one_hour_query)
    """
    if every <= 0:
        raise ValueError("every must be positive")
    stop = threading.Event()

    def beat() -> None:
        while True:
            heartbeat(force=True)
            if stop.wait(every):
                return

    thread = threading.Thread(target=beat, name="jobdock-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _count(what: str, value: object) -> int:
    """A whole, non-negative count from an int (numpy's integers included) or any real
    number (float, Decimal, Fraction; rounded down)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, not a bool")
    if hasattr(value, "__index__"):
        n = operator.index(value)
    elif isinstance(value, (numbers.Real, decimal.Decimal)):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, not {value}")
        n = int(math.floor(value))
    else:
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if n < 0:
        raise ValueError(f"{what} must not be negative, not {value}")
    return int(n)


def _reset() -> None:
    """Forgets when the last lines were printed (for tests)."""
    global _last_progress, _last_heartbeat
    with _lock:
        _last_progress = _last_heartbeat = None
