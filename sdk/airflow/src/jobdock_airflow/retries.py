"""When a call to the engine is worth sending again, and after how long.

Transient answers are retried with a bounded exponential backoff: connection errors, 5xx, and
the refusals that say "later" (429 queue full, 503) after their Retry-After. A request that
may have reached the engine (a read timeout, a 500 after the body was sent) is sent again only
when it is safe to: reads, cancels and triggers that carry an idempotency key.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

# 503 and 429 are the engine's "not now" (no run was started); the others are a proxy's or a
# server's failure that may come after the request was handled.
REFUSED_STATUSES = frozenset({429, 503})
FAILED_STATUSES = frozenset({500, 502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` sends after the first; the n-th waits about `base_delay * 2**n` seconds
    (with jitter) up to `max_delay`, or what Retry-After asks up to `max_retry_after`."""

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def after_response(self, response: httpx.Response, attempt: int, resendable: bool) -> float | None:
        """Seconds to wait before sending again, or None when `response` is the answer."""
        if attempt >= self.max_retries:
            return None
        status = response.status_code
        if status in REFUSED_STATUSES:
            asked = retry_after_seconds(response.headers.get("retry-after"))
            if asked is not None:
                return min(asked, self.max_retry_after)
            return self._backoff(attempt)
        if status in FAILED_STATUSES and resendable:
            return self._backoff(attempt)
        return None

    def after_error(self, error: httpx.TransportError, attempt: int, resendable: bool) -> float | None:
        """Seconds to wait before sending again after a transport error, or None to give up.
        A request that never connected is always safe to send again."""
        if attempt >= self.max_retries:
            return None
        never_sent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
        if never_sent or resendable:
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
