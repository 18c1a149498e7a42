"""The REST source against a local server that paginates each way and sends 429s and 503s
along the way."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from conftest import Reply, Seen, TestServer
from jobdock import HttpError, JobdockError, source
from jobdock.source import Cursor, LinkHeader, NextLink, PageNumber, Source, parse_link_header, pick

RECORDS = [{"id": i, "name": f"order {i}"} for i in range(1, 24)]  # 23 records
PAGE = 5


def query(seen: Seen) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen.path).query))


class Flaky:
    """Answers each distinct request first with a 429 (Retry-After 0), then a 503, then for
    real, so that every page needs retries."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.tries: dict[str, int] = {}

    def __call__(self, seen: Seen) -> Reply:
        n = self.tries[seen.path] = self.tries.get(seen.path, 0) + 1
        if n == 1:
            return Reply(429, {"title": "Too Many Requests"}, headers={"Retry-After": "0"})
        if n == 2:
            return Reply(503, b"<html>busy</html>", headers={"Content-Type": "text/html"})
        return self.real(seen)


def test_next_link_in_the_body(server: TestServer, no_sleep: list[float]) -> None:
    def real(seen: Seen) -> Reply:
        offset = int(query(seen).get("offset", 0))
        nxt = offset + PAGE
        return Reply(200, {
            "data": {"items": RECORDS[offset:nxt]},
            # relative links, as many APIs give
            "links": {"next": f"/orders?offset={nxt}&since=2026-01-01" if nxt < len(RECORDS) else None},
        })

    server.handler = Flaky(real)
    got = list(source.records(server.url + "/orders", params={"since": "2026-01-01"},
                              items="data.items", pagination=NextLink("links.next")))
    assert got == RECORDS
    pages = [s for s in server.seen if s.path.startswith("/orders")]
    assert len(pages) == 5 * 3  # five pages, each after a 429 and a 503
    assert no_sleep.count(0.0) == 5  # the 429s' Retry-After: 0


def test_link_header(server: TestServer, no_sleep: list[float]) -> None:
    def real(seen: Seen) -> Reply:
        page = int(query(seen).get("page", 1))
        start = (page - 1) * PAGE
        headers = {}
        if start + PAGE < len(RECORDS):
            headers["Link"] = (f'<{server.url}/items?page=1>; rel="first", '
                               f'<{server.url}/items?page={page + 1}>; rel="next"')
        return Reply(200, RECORDS[start:start + PAGE], headers=headers)

    server.handler = Flaky(real)
    assert list(source.records(server.url + "/items", pagination=LinkHeader())) == RECORDS


def test_cursor(server: TestServer, no_sleep: list[float]) -> None:
    def real(seen: Seen) -> Reply:
        q = query(seen)
        assert q["api_version"] == "2"  # the source's own params stay on every page
        offset = int(q["cursor"][1:]) if "cursor" in q else 0
        nxt = offset + PAGE
        return Reply(200, {"results": RECORDS[offset:nxt],
                           "meta": {"next_cursor": f"c{nxt}" if nxt < len(RECORDS) else ""}})

    server.handler = Flaky(real)
    api = Source(server.url + "/api/", params={"api_version": 2})
    got = list(api.records("things", items="results", pagination=Cursor("meta.next_cursor")))
    assert got == RECORDS
    cursors = [query(s).get("cursor") for s in server.seen]
    assert cursors[-1] == "c20" and len(set(cursors)) == 5


def test_page_numbers_until_an_empty_page(server: TestServer, no_sleep: list[float]) -> None:
    def real(seen: Seen) -> Reply:
        page = int(query(seen)["p"])
        return Reply(200, {"rows": RECORDS[page * PAGE:(page + 1) * PAGE]})

    server.handler = Flaky(real)
    got = list(source.records(server.url, items="rows", pagination=PageNumber("p", start=0)))
    assert got == RECORDS
    asked = [int(query(s)["p"]) for s in server.seen if not s.path.endswith("busy")]
    assert max(asked) == 5  # the empty page after the last one


def test_page_numbers_stop_at_a_short_page(server: TestServer) -> None:
    def real(seen: Seen) -> Reply:
        q = query(seen)
        size, page = int(q["per_page"]), int(q["page"])
        return Reply(200, RECORDS[(page - 1) * size:page * size])

    server.handler = real
    got = list(source.records(server.url, pagination=PageNumber(size=PAGE, size_param="per_page")))
    assert got == RECORDS
    assert len(server.seen) == 5  # 5+5+5+5+3: the short fifth page is the last


def test_page_numbers_stop_at_total_pages(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"items": [{"page": query(seen)["page"]}],
                                              "meta": {"pages": 3}})
    got = list(source.records(server.url, items="items",
                              pagination=PageNumber(total_pages="meta.pages")))
    assert got == [{"page": "1"}, {"page": "2"}, {"page": "3"}]


def test_max_pages(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"items": [1], "next": f"/?n={len(server.seen)}"})
    got = list(source.records(server.url, items="items", pagination=NextLink(), max_pages=3))
    assert got == [1, 1, 1]


def test_a_source_that_loops_is_stopped(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"items": [1], "next": "/same"})
    with pytest.raises(JobdockError, match="pagination loops"):
        list(source.records(server.url + "/same", items="items", pagination=NextLink(), max_pages=50))
    assert len(server.seen) == 1


def test_records_are_yielded_page_by_page(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"items": [len(server.seen)], "next": f"/{len(server.seen)}"})
    it = source.records(server.url, items="items", pagination=NextLink())
    assert next(it) == 1 and next(it) == 2
    assert len(server.seen) == 2  # lazily: no page is read ahead


def test_a_client_error_is_not_retried_and_says_what_the_server_said(
    server: TestServer, no_sleep: list[float]
) -> None:
    server.handler = lambda seen: Reply(401, {"error": "bad key"})
    with pytest.raises(HttpError) as err:
        list(source.records(server.url + "/x?api_key=SECRETKEY", items="items"))
    assert err.value.status == 401 and "bad key" in err.value.body
    assert "SECRETKEY" not in str(err.value) and len(server.seen) == 1


def test_persistent_503s_give_up(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = lambda seen: Reply(503)
    with pytest.raises(HttpError, match="after 2 attempts"):
        source.get_json(server.url, retry=source.Retry(attempts=2))


def test_a_non_json_answer(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, b"<html>login</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(HttpError, match="not JSON.*login"):
        source.get_json(server.url)


def test_items_must_be_named_for_an_object(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"data": []})
    with pytest.raises(JobdockError, match="pass items="):
        list(source.records(server.url))


def test_headers_and_params_are_sent(server: TestServer) -> None:
    server.handler = lambda seen: Reply(200, {"ok": True})
    api = Source(server.url, headers={"Authorization": "Bearer T0K", "X-Tenant": "a"},
                 params={"fixed": "1"})
    assert api.get_json("/v1/x", params={"since": "2026-01-01", "skip": None, "ids": [1, 2]}) == {"ok": True}
    seen = server.seen[0]
    assert seen.headers["Authorization"] == "Bearer T0K" and seen.headers["X-Tenant"] == "a"
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(seen.path).query) == {
        "fixed": ["1"], "since": ["2026-01-01"], "ids": ["1", "2"]}
    assert "T0K" not in repr(api)


def test_pick() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert pick(data, "a.b.1.c") == 2
    assert pick(data, ["a", "b", 0, "c"]) == 1
    assert pick(data, "a.x", None) is None
    with pytest.raises(KeyError):
        pick(data, "a.b.5")


def test_parse_link_header() -> None:
    header = '<https://x/?page=2>; rel="next", <https://x/?page=9>; rel="last prev-ish"'
    assert parse_link_header(header) == [("https://x/?page=2", {"next"}),
                                          ("https://x/?page=9", {"last", "prev-ish"})]
