"""Values never to print: the secrets this process read through `jobdock.secret()` and the
run token. `jobdock.log` masks them in every line it writes, as the engine masks them in the
stored log; this copy also covers output that goes elsewhere (a terminal, a local test)."""

from __future__ import annotations

import threading

MASK = "***"
# As the engine's redactor: a value is masked whole; a multi-line one (a PEM key) also line by
# line, for its lines of at least this length (shorter ones would mask ordinary words).
_MIN_LINE = 4

_lock = threading.Lock()
_values: set[str] = set()


def remember(value: str) -> None:
    """Masks `value` (and each of its lines) from now on."""
    if not value:
        return
    with _lock:
        _values.add(value)
        if "\n" in value:
            _values.update(ln.strip() for ln in value.splitlines() if len(ln.strip()) >= _MIN_LINE)


def mask(text: str) -> str:
    """`text` with every remembered value replaced by `***`, longest first."""
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, MASK)
    return text


def forget_all() -> None:
    """Forgets every value (for tests)."""
    with _lock:
        _values.clear()
