"""Reading a REST source: GET JSON with timeouts, retries and pagination, yielding records.

    from jobdock import source
    api = source.Source(
        "https://erp.example.com/api/",
        headers={"Authorization": f"Bearer {jobdock.secret('ERP_TOKEN')}"},
    )
    for order in api.records("orders", params={"since": since}, items="data",
                             pagination=source.NextLink("links.next")):
        ...

A request is retried on connection errors, timeouts, 502, 503, 504 and 429, waiting what
`Retry-After` says (seconds or a date, up to `Retry.max_retry_after`) or else an exponential
backoff with jitter: five attempts in all by default (`retry=source.Retry(attempts=...)`).
Other statuses raise `HttpError` at once.

Pagination, one of:

- `NextLink("links.next")`: the next page's address is in the body at that path;
- `LinkHeader()`: it is the `Link: <...>; rel="next"` header (RFC 8288), as GitHub does;
- `Cursor("meta.next_cursor", param="cursor")`: a token in the body, sent back as a query
  parameter;
- `PageNumber("page", start=1, size=100, size_param="per_page")`: pages counted up until
  one is empty (or shorter than `size`, or past the body's `total_pages` path when given).

Paths into JSON are dotted (`"data.items"`, `"results.0.id"`) or a list of keys. `records()`
stops when the next page would repeat one already read (a source that loops) by raising
`JobdockError`, and after `max_pages` pages when that is given.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from email.message import Message
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from . import _http, log
from ._http import NO_RETRY, Retry, safe_url
from .errors import HttpError, JobdockError

__all__ = [
    "Source", "Page", "Retry", "NO_RETRY", "NextLink", "LinkHeader", "Cursor", "PageNumber",
    "get_json", "records", "pick",
]

Path = Union[str, Sequence[Union[str, int]]]
Params = Mapping[str, Any]


@dataclass
class Page:
    """One page read: its address (after redirects), the JSON body, its records and the
    answer's headers."""

    url: str
    data: Any
    records: list[Any]
    headers: Message
    number: int


class Source:
    """A REST source: a base address, headers and query parameters sent with every request,
    a timeout (seconds, for connecting and each read) and a retry policy."""

    def __init__(
        self,
        base_url: str = "",
        *,
        headers: Optional[Mapping[str, str]] = None,
        params: Optional[Params] = None,
        timeout: float = 30.0,
        retry: Retry = Retry(),
    ) -> None:
        self.base_url = base_url
        self.headers = {"Accept": "application/json", **(headers or {})}
        self.params = dict(params or {})
        self.timeout = timeout
        self.retry = retry

    def __repr__(self) -> str:  # the headers may hold credentials
        return f"Source({safe_url(self.base_url)!r}, headers=[{', '.join(self.headers)}])"

    def url(self, path: str, params: Optional[Params] = None) -> str:
        """The absolute address of `path` (relative to `base_url`) with the query parameters
        of the source and `params` added (None values left out)."""
        url = urllib.parse.urljoin(self.base_url, path) if self.base_url else path
        merged = {**self.params, **(params or {})}
        return _with_params(url, merged)

    def get(self, path: str, params: Optional[Params] = None,
            headers: Optional[Mapping[str, str]] = None) -> _http.Response:
        """One GET with retries; the raw answer."""
        return _http.request(
            "GET", self.url(path, params), headers={**self.headers, **(headers or {})},
            timeout=self.timeout, retry=self.retry,
        )

    def get_json(self, path: str, params: Optional[Params] = None,
                 headers: Optional[Mapping[str, str]] = None) -> Any:
        """One GET with retries; the body as JSON (`HttpError` when it is not JSON)."""
        return _decode(self.get(path, params, headers))

    def pages(
        self,
        path: str,
        *,
        params: Optional[Params] = None,
        items: Optional[Path] = None,
        pagination: Optional["Pagination"] = None,
        max_pages: Optional[int] = None,
    ) -> Iterator[Page]:
        """The pages of `path`, read one after the other as the iteration goes."""
        if isinstance(pagination, PageNumber):
            params = {**pagination.first_params(), **(params or {})}
        url: Optional[str] = self.url(path, params)
        seen: set[str] = set()
        number = 0
        while url is not None:
            if url in seen:
                raise JobdockError(
                    f"pagination loops: the next page of {safe_url(path)} is {safe_url(url)} again"
                )
            seen.add(url)
            number += 1
            resp = _http.request(
                "GET", url, headers=self.headers, timeout=self.timeout, retry=self.retry
            )
            data = _decode(resp)
            page = Page(resp.url, data, _records(data, items, resp.url), resp.headers, number)
            log.debug("read page", url=safe_url(resp.url), page=number, records=len(page.records))
            yield page
            if pagination is None or (max_pages is not None and number >= max_pages):
                return
            url = pagination.next_url(page, url)

    def records(
        self,
        path: str,
        *,
        params: Optional[Params] = None,
        items: Optional[Path] = None,
        pagination: Optional["Pagination"] = None,
        max_pages: Optional[int] = None,
    ) -> Iterator[Any]:
        """The records of every page of `path`: the list at `items` in each body (the body
        itself when it is a list and `items` is None)."""
        for page in self.pages(
            path, params=params, items=items, pagination=pagination, max_pages=max_pages
        ):
            yield from page.records


class Pagination:
    """How to find the next page. `next_url(page, url)` returns the next page's address or
    None when `page` was the last one; `url` is the address `page` was asked for."""

    def next_url(self, page: Page, url: str) -> Optional[str]:
        raise NotImplementedError


class NextLink(Pagination):
    """The next page's address is the string at `path` in the body (absent, null or empty
    on the last page); a relative address is taken relative to the page's."""

    def __init__(self, path: Path = "next") -> None:
        self.path = path

    def next_url(self, page: Page, url: str) -> Optional[str]:
        link = pick(page.data, self.path, None)
        if not link:
            return None
        if not isinstance(link, str):
            raise JobdockError(f"the next link at {_show(self.path)} is not a string: {link!r}")
        return urllib.parse.urljoin(page.url, link)


class LinkHeader(Pagination):
    """The next page's address is the `Link` header's target with `rel` (RFC 8288)."""

    def __init__(self, rel: str = "next") -> None:
        self.rel = rel

    def next_url(self, page: Page, url: str) -> Optional[str]:
        for header in page.headers.get_all("Link") or []:
            for target, rels in parse_link_header(header):
                if self.rel in rels:
                    return urllib.parse.urljoin(page.url, target)
        return None


class Cursor(Pagination):
    """The body holds a cursor at `path` (absent, null or empty on the last page); the next
    page is the same address with the query parameter `param` set to it."""

    def __init__(self, path: Path = "next_cursor", param: str = "cursor") -> None:
        self.path = path
        self.param = param

    def next_url(self, page: Page, url: str) -> Optional[str]:
        cursor = pick(page.data, self.path, None)
        if cursor is None or cursor == "" or cursor is False:
            return None
        return _with_params(url, {self.param: cursor}, replace=True)


class PageNumber(Pagination):
    """Pages counted in the query parameter `param`, from `start`. With `size` and
    `size_param`, the page size is asked for too, and a page shorter than `size` is the
    last. A page without records is the last; so is page `total_pages` when that path
    into the body is given."""

    def __init__(
        self,
        param: str = "page",
        *,
        start: int = 1,
        size: Optional[int] = None,
        size_param: Optional[str] = None,
        total_pages: Optional[Path] = None,
    ) -> None:
        self.param = param
        self.start = start
        self.size = size
        self.size_param = size_param
        self.total_pages = total_pages

    def first_params(self) -> dict[str, Any]:
        """The query parameters of the first page (added by `Source.pages()`)."""
        first: dict[str, Any] = {self.param: self.start}
        if self.size is not None and self.size_param:
            first[self.size_param] = self.size
        return first

    def next_url(self, page: Page, url: str) -> Optional[str]:
        if not page.records:
            return None
        if self.size is not None and len(page.records) < self.size:
            return None
        current = self.start + page.number - 1
        if self.total_pages is not None:
            total = pick(page.data, self.total_pages, None)
            if total is not None and current >= int(total):
                return None
        params = {self.param: current + 1}
        if self.size is not None and self.size_param:
            params[self.size_param] = self.size
        return _with_params(url, params, replace=True)


def get_json(
    url: str,
    *,
    params: Optional[Params] = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 30.0,
    retry: Retry = Retry(),
) -> Any:
    """One GET of `url` with retries; the body as JSON."""
    return Source(headers=headers, timeout=timeout, retry=retry).get_json(url, params)


def records(
    url: str,
    *,
    params: Optional[Params] = None,
    headers: Optional[Mapping[str, str]] = None,
    items: Optional[Path] = None,
    pagination: Optional[Pagination] = None,
    max_pages: Optional[int] = None,
    timeout: float = 30.0,
    retry: Retry = Retry(),
) -> Iterator[Any]:
    """The records of every page of `url` (see `Source.records`)."""
    return Source(headers=headers, timeout=timeout, retry=retry).records(
        url, params=params, items=items, pagination=pagination, max_pages=max_pages
    )


_MISSING: Any = object()


def pick(data: Any, path: Path, default: Any = _MISSING) -> Any:
    """The value at `path` in `data` (`"a.b.0.c"` or `["a", "b", 0, "c"]`); `default` when
    a step is missing (a `KeyError` without one)."""
    keys: Sequence[Union[str, int]] = path.split(".") if isinstance(path, str) else path
    current = data
    for key in keys:
        if isinstance(current, Mapping) and key in current:
            current = current[key]
        elif isinstance(current, list) and str(key).lstrip("-").isdigit() and -len(current) <= int(key) < len(current):
            current = current[int(key)]
        else:
            if default is _MISSING:
                raise KeyError(f"no {_show(path)} in the JSON (stopped at {key!r})")
            return default
    return current


_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[^;,]+)*)')


def parse_link_header(value: str) -> list[tuple[str, set[str]]]:
    """The targets of a `Link` header with the set of their `rel` values."""
    found: list[tuple[str, set[str]]] = []
    for match in _LINK.finditer(value):
        rels: set[str] = set()
        for param in match.group(2).split(";"):
            name, _, raw = param.strip().partition("=")
            if name.strip().lower() == "rel":
                rels.update(raw.strip().strip('"').lower().split())
        found.append((match.group(1).strip(), rels))
    return found


def _records(data: Any, items: Optional[Path], url: str) -> list[Any]:
    if items is None:
        if isinstance(data, list):
            return data
        raise JobdockError(
            f"the answer of {safe_url(url)} is a JSON {type(data).__name__}, not a list: "
            "pass items= naming the list of records in it (e.g. items=\"data\")"
        )
    found = pick(data, items, None)
    if found is None:
        return []
    if not isinstance(found, list):
        raise JobdockError(f"{_show(items)} in the answer of {safe_url(url)} is not a list")
    return found


def _decode(resp: _http.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        snippet = resp.text()[:200].replace("\n", " ")
        raise HttpError(
            f"GET {safe_url(resp.url)}: the answer ({resp.status}) is not JSON: {snippet!r}",
            method="GET", url=safe_url(resp.url), status=resp.status, body=resp.text()[:2000],
        ) from None


def _with_params(url: str, params: Params, *, replace: bool = False) -> str:
    clean = {k: v for k, v in params.items() if v is not None}
    if not clean:
        return url
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if replace:
        pairs = [(k, v) for k, v in pairs if k not in clean]
    for key, value in clean.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        pairs.extend((key, _param_text(v)) for v in values)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))


def _param_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _show(path: Path) -> str:
    return path if isinstance(path, str) else ".".join(str(k) for k in path)

