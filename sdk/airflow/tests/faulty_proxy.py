"""A loopback HTTP proxy in front of the engine that misbehaves on request, to test the hook's
retries against the real engine: it can refuse a call (503 with Retry-After, without
forwarding it) or forward a call and then hang up before answering (the engine acted, the
caller never heard)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

REFUSE = "refuse"  # answer 503 Retry-After: 1, do not forward
HANG_UP = "hang_up"  # forward, then close the connection without an answer


@dataclass
class Proxy:
    url: str
    # Faults to apply, in order, to requests whose "METHOD path" starts with the key.
    faults: dict[str, list[str]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, request_line: str) -> str | None:
        with self.lock:
            self.seen.append(request_line)
            for prefix, pending in self.faults.items():
                if request_line.startswith(prefix) and pending:
                    return pending.pop(0)
        return None

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for line in self.seen if line.startswith(prefix))


@contextlib.contextmanager
def faulty_proxy(upstream: str) -> Iterator[Proxy]:
    proxy = Proxy(url="")
    client = httpx.Client(base_url=upstream, timeout=90)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = proxy.next_fault(f"{self.command} {self.path}")
            if fault == REFUSE:
                payload = b'{"title":"Service Unavailable","status":503}'
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            hop = ("host", "content-length", "connection")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
            answer = client.request(self.command, self.path, content=body, headers=headers)
            if fault == HANG_UP:
                self.close_connection = True
                return
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        client.close()
