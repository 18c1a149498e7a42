"""The HTTP transport under the state client and the REST source: retries and their waits,
timeouts, what is not retried, redirects that keep credentials home, masked addresses."""

from __future__ import annotations

import email.utils
import gzip
import json
import time

import pytest

from conftest import Reply, Seen, TestServer, free_port
from jobdock import HttpError, _http
from jobdock._http import Retry, request, retry_after, safe_url


def sequence(*replies: Reply):
    """A handler answering with `replies` in turn, then the last one for ever."""
    queue = list(replies)

    def handle(seen: Seen) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handle


def test_503s_are_retried_with_growing_backoff(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(503), Reply(503), Reply(502), Reply(504), Reply(200, {"ok": 1}))
    resp = request("GET", server.url + "/x", retry=Retry(attempts=5, backoff=0.5))
    assert resp.json() == {"ok": 1}
    assert len(server.seen) == 5
    assert len(no_sleep) == 4
    for n, delay in enumerate(no_sleep, 1):  # 0.5, 1, 2, 4 times a jitter in [0.5, 1]
        assert 0.5 * 2 ** (n - 1) * 0.5 <= delay <= 0.5 * 2 ** (n - 1)


def test_backoff_is_capped(no_sleep: list[float]) -> None:
    policy = Retry(backoff=1, max_backoff=3)
    assert all(policy.delay(n) <= 3 for n in range(1, 20))
    assert policy.delay(10) >= 1.5


def test_429_waits_what_retry_after_says(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(429, headers={"Retry-After": "7"}), Reply(200, [1]))
    assert request("GET", server.url).json() == [1]
    assert no_sleep == [7.0]


def test_retry_after_as_an_http_date(server: TestServer, no_sleep: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.handler = sequence(Reply(503, headers={"Retry-After": when}), Reply(200, {}))
    request("GET", server.url)
    assert len(no_sleep) == 1 and 27 <= no_sleep[0] <= 31


def test_a_retry_after_longer_than_the_client_waits_fails_at_once(
    server: TestServer, no_sleep: list[float]
) -> None:
    server.handler = sequence(Reply(429, {"title": "slow down"}, headers={"Retry-After": "3600"}))
    with pytest.raises(HttpError, match="retry after 3600 s, longer than the 120 s") as err:
        request("GET", server.url + "/limited")
    assert err.value.status == 429 and len(server.seen) == 1 and no_sleep == []


def test_a_real_retry_after_is_really_waited(server: TestServer) -> None:
    server.handler = sequence(Reply(429, headers={"Retry-After": "1"}), Reply(200, {}))
    started = time.monotonic()
    request("GET", server.url)
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("status", [400, 401, 404, 409, 500])
def test_other_statuses_are_not_retried(server: TestServer, no_sleep: list[float], status: int) -> None:
    server.handler = sequence(Reply(status, {"detail": "nope"}))
    with pytest.raises(HttpError) as err:
        request("GET", server.url + "/thing")
    assert err.value.status == status and err.value.attempts == 1
    assert len(server.seen) == 1 and no_sleep == []
    assert "nope" in err.value.body
    assert f"GET {server.url}/thing: {status}" in str(err.value)


def test_giving_up_after_the_attempts(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(503))
    with pytest.raises(HttpError, match=r"503 .*after 3 attempts") as err:
        request("GET", server.url, retry=Retry(attempts=3))
    assert err.value.status == 503 and err.value.attempts == 3 and len(server.seen) == 3


def test_connection_refused_is_retried_then_reported(no_sleep: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(HttpError, match="connection refused.*after 4 attempts") as err:
        request("GET", url, retry=Retry(attempts=4))
    assert err.value.status is None and len(no_sleep) == 3


def test_a_certificate_error_is_not_retried(no_sleep: list[float]) -> None:
    """A TLS server whose certificate nobody trusts (made here with openssl)."""
    import shutil
    import ssl
    import subprocess
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    if not shutil.which("openssl"):
        pytest.skip("no openssl to make a certificate")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", f"{work}/k.pem", "-out", f"{work}/c.pem"],
                       check=True, capture_output=True)
        httpd = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{work}/c.pem", f"{work}/k.pem")
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            with pytest.raises(HttpError, match="TLS: .*certificate") as err:
                request("GET", f"https://127.0.0.1:{httpd.server_address[1]}/", timeout=5)
            assert err.value.attempts == 1 and no_sleep == []
        finally:
            httpd.shutdown()
            httpd.server_close()


def test_a_slow_server_times_out_and_is_retried(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(200, {}, delay=3.0), Reply(200, {"fast": True}))
    started = time.monotonic()
    assert request("GET", server.url, timeout=0.2).json() == {"fast": True}
    assert time.monotonic() - started < 2.0  # it did not wait for the slow answer
    assert len(no_sleep) == 1


def test_a_timeout_every_time_ends_the_call(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(200, {}, delay=3.0))
    started = time.monotonic()
    with pytest.raises(HttpError, match="timed out"):
        request("GET", server.url, timeout=0.1, retry=Retry(attempts=2))
    assert time.monotonic() - started < 2.0  # two answers would take 6 s


def test_gzip_answers_are_decompressed(server: TestServer) -> None:
    server.handler = sequence(Reply(200, gzip.compress(json.dumps({"z": 1}).encode()),
                                    headers={"Content-Encoding": "gzip"}))
    assert request("GET", server.url).json() == {"z": 1}
    assert "gzip" in server.seen[0].headers["Accept-Encoding"]


def test_a_gzip_body_cut_short_is_retried(server: TestServer, no_sleep: list[float]) -> None:
    whole = gzip.compress(json.dumps({"z": 1}).encode())
    server.handler = sequence(Reply(200, whole[:-12], headers={"Content-Encoding": "gzip"}),
                              Reply(200, whole, headers={"Content-Encoding": "gzip"}))
    assert request("GET", server.url).json() == {"z": 1}
    assert len(server.seen) == 2


def test_credentials_follow_a_redirect_only_to_the_same_origin(server: TestServer) -> None:
    other = TestServer()
    try:
        other.handler = sequence(Reply(200, {"where": "other"}))
        server.handler = lambda seen: (
            Reply(302, headers={"Location": "/same"}) if seen.path == "/start"
            else Reply(302, headers={"Location": other.url + "/away"}) if seen.path == "/same"
            else Reply(404)
        )
        resp = request("GET", server.url + "/start",
                       headers={"Authorization": "Bearer tok-abc", "Cookie": "c=1", "X-Plain": "p"})
        assert resp.json() == {"where": "other"} and resp.url == other.url + "/away"
        assert [s.path for s in server.seen] == ["/start", "/same"]
        assert server.seen[1].headers.get("Authorization") == "Bearer tok-abc"
        away = other.seen[0].headers
        assert "Authorization" not in away and "Cookie" not in away
        assert away.get("X-Plain") == "p"
    finally:
        other.close()


def test_safe_url_masks_credentials() -> None:
    url = "https://user:pa55@api.example.com/v1/x?api_key=K1&page=2&access_token=T&signature=S"
    shown = safe_url(url)
    for secret in ("pa55", "K1", "=T", "=S"):
        assert secret not in shown
    assert "page=2" in shown and "user:***@" in shown


def test_errors_show_masked_urls_and_never_headers(server: TestServer, no_sleep: list[float]) -> None:
    server.handler = sequence(Reply(403, {"title": "Forbidden"}))
    with pytest.raises(HttpError) as err:
        request("GET", server.url + "/x?token=tok-xyz&n=1",
                headers={"Authorization": "Bearer tok-header-secret"})
    text = str(err.value) + err.value.url
    assert "tok-xyz" not in text and "tok-header-secret" not in text and "n=1" in text


def test_retry_after_parsing() -> None:
    from email.message import Message

    def h(value: str) -> Message:
        m = Message()
        m["Retry-After"] = value
        return m

    assert retry_after(h("12")) == 12.0
    assert retry_after(h("soon")) is None
    assert retry_after(Message()) is None
    assert retry_after(h(email.utils.formatdate(time.time() - 60, usegmt=True))) == 0.0


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError):
        Retry(attempts=0)
    with pytest.raises(ValueError):
        Retry(backoff=-1)
    assert _http.NO_RETRY.attempts == 1
