"""HTTP over the standard library (`urllib`), with timeouts and bounded retries.

Shared by the state client (`_api.py`) and the REST source (`source.py`). A request is
retried when it got no answer (connection refused or reset, a timeout, a dropped
connection, a DNS failure) or a status in `Retry.statuses` (429, 502, 503, 504), waiting
`Retry-After` when the server sent one (seconds or an HTTP date) and else an exponential
backoff with jitter. Certificate errors and other statuses are not retried.

Credentials are kept out of harm's way: `Authorization`, `Proxy-Authorization` and `Cookie`
follow a redirect only to the same scheme, host and port, and an address is shown in
errors and log lines with credential-like query values masked (`safe_url`).
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import random
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Callable, Mapping, Optional

from . import log
from .errors import HttpError

_sleep: Callable[[float], None] = time.sleep

SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_SECRET_PARAM = re.compile(
    r"(token|key|secret|passw|pwd|sig|auth|credential|session|code)", re.IGNORECASE
)
_ERROR_BODY_LIMIT = 64 * 1024
USER_AGENT = "jobdock-python-sdk/0.1"


@dataclass(frozen=True)
class Retry:
    """How a call is retried. `attempts` counts every request, the first included (1 means
    no retry). The n-th retry waits `backoff * 2**(n-1)` seconds, at most `max_backoff`,
    times a random factor between 0.5 and 1, or what `Retry-After` says; a `Retry-After`
    longer than `max_retry_after` is not waited for: the call fails at once."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry_number: int) -> float:
        """The backoff before retry `retry_number` (1 for the first retry)."""
        base = min(self.max_backoff, self.backoff * (2 ** (retry_number - 1)))
        return float(base * random.uniform(0.5, 1.0))


NO_RETRY = Retry(attempts=1)


@dataclass
class Response:
    """An answer: status, headers (case-insensitive), the body, and the final address."""

    status: int
    headers: Message
    body: bytes
    url: str

    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        return self.body.decode(charset, errors="replace")

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.body.decode(self.headers.get_content_charset() or "utf-8"))


ErrorFactory = Callable[..., HttpError]


def request(
    method: str,
    url: str,
    *,
    headers: Optional[Mapping[str, str]] = None,
    body: Optional[bytes] = None,
    timeout: float = 30.0,
    retry: Retry = Retry(),
    error: ErrorFactory = HttpError,
) -> Response:
    """Makes the call, retrying as `retry` says. Returns the answer when its status is below
    400; else raises `error(message, method=, url=, status=, attempts=, body=)` (an
    `HttpError` by default; `status` None when no answer came)."""
    shown = safe_url(url)
    attempt = 0
    while True:
        attempt += 1
        status: Optional[int] = None
        reason: str
        wait: Optional[float] = None
        err_body = ""
        try:
            return _once(method, url, headers or {}, body, timeout)
        except urllib.error.HTTPError as err:
            status = err.code
            err_body = _read_error_body(err)
            reason = f"{status} {err.reason}"
            if status not in retry.statuses:
                raise _build(error, method, shown, status, attempt, err_body, reason) from None
            wait = retry_after(err.headers)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            inner = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(inner, ssl.SSLCertVerificationError):
                raise _build(error, method, shown, None, attempt, "",
                             f"TLS: {inner.verify_message or inner}") from None
            if not isinstance(inner, (OSError, http.client.HTTPException)):
                # e.g. "unknown url type": no retry can help
                raise _build(error, method, shown, None, attempt, "", _describe(err)) from None
            reason = _describe(err)
        if attempt >= retry.attempts:
            raise _build(error, method, shown, status, attempt, err_body, f"{reason} (after {attempt} attempts)")
        if wait is not None and wait > retry.max_retry_after:
            raise _build(
                error, method, shown, status, attempt, err_body,
                f"{reason}; the server asks to retry after {wait:.0f} s, longer than the "
                f"{retry.max_retry_after:.0f} s this client waits",
            )
        delay = wait if wait is not None else retry.delay(attempt)
        log.warning(
            "retrying HTTP call", method=method, url=shown, reason=reason,
            attempt=attempt, delay_s=round(delay, 3),
        )
        _sleep(delay)


def _once(
    method: str, url: str, headers: Mapping[str, str], body: Optional[bytes], timeout: float
) -> Response:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("User-Agent", USER_AGENT)
    req.add_header("Accept-Encoding", "gzip")
    for name, value in headers.items():
        if name.lower() in SENSITIVE_HEADERS:
            # Not copied by urllib's redirect handling; `_Redirects` re-adds them for the
            # same origin only.
            req.add_unredirected_header(name, value)
        else:
            req.add_header(name, value)
    with _opener.open(req, timeout=timeout) as resp:
        raw = resp.read()
        return Response(resp.status, resp.headers, _decompress(raw, resp.headers), resp.geturl())


def _decompress(raw: bytes, headers: Message) -> bytes:
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # A body cut short in transit: a transient failure, retried like a dropped connection.
        raise ConnectionError(f"a {encoding} body that does not decompress: {err}") from None
    return raw


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str,
        headers: http.client.HTTPMessage, newurl: str,
    ) -> Optional[urllib.request.Request]:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(req.full_url) == _origin(new.full_url):
            for name, value in req.unredirected_hdrs.items():
                if name.lower() in SENSITIVE_HEADERS:
                    new.add_unredirected_header(name, value)
        return new


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


_opener = urllib.request.build_opener(_Redirects())


def retry_after(headers: Optional[Message]) -> Optional[float]:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None
    when there is none or it cannot be read."""
    if headers is None:
        return None
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def safe_url(url: str) -> str:
    """`url` with a password in it and credential-like query values (`token`, `api_key`,
    `signature`, ...) replaced by `***`, for error messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode(
            [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*/:,"
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _read_error_body(err: urllib.error.HTTPError) -> str:
    try:
        raw = err.read(_ERROR_BODY_LIMIT)
        raw = _decompress(raw, err.headers)
    except Exception:  # noqa: BLE001 - the body of an error is a courtesy
        return ""
    return raw.decode("utf-8", errors="replace")


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        inner = err.reason
        if isinstance(inner, BaseException):
            return _describe(inner)
        return str(inner)
    if isinstance(err, TimeoutError) or type(err).__name__ == "timeout":
        return "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    text = str(err) or type(err).__name__
    return text


def _build(
    factory: ErrorFactory, method: str, shown: str, status: Optional[int], attempts: int,
    body: str, reason: str,
) -> HttpError:
    return factory(
        f"{method} {shown}: {reason}", method=method, url=shown, status=status,
        attempts=attempts, body=body,
    )
