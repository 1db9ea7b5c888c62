"""Fetching against a real HTTP server on 127.0.0.1: 304 honoured, timeouts and oversized bodies
refused, failures backed off, and the whole update pipeline keeping the last good copy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from outguard.feeds.fetch import fetch, make_client
from outguard.feeds.schedule import backoff, is_due, next_due
from outguard.feeds.spec import FeedSpec, Limits
from outguard.feeds.store import FeedMeta, FeedStore
from outguard.feeds.update import update_feeds
from outguard.feeds.validate import default_never_block

BODY = "".join(f"198.51.100.{i}\n" for i in range(1, 60)).encode()


class Server:
    def __init__(self) -> None:
        self.body = BODY
        self.etag = '"v1"'
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                if self.path == "/list":
                    if self.headers.get("If-None-Match") == server.etag:
                        self.send_response(304)
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("ETag", server.etag)
                    self.send_header("Last-Modified", "Sat, 22 Aug 2026 15:56:45 GMT")
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body)
                elif self.path == "/slow":
                    time.sleep(2)
                    self.send_response(200)
                    self.end_headers()
                elif self.path == "/big":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 << 20))
                    self.end_headers()
                elif self.path == "/endless":  # no Content-Length: the cap must stop the stream
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(2000):
                            self.wfile.write(b"203.0.113.1\n" * 1000)
                    except OSError:
                        pass
                else:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


def spec(url: str, **kw: object) -> FeedSpec:
    return FeedSpec(name="t", url=url, format="plain", category="test", **kw)  # type: ignore[arg-type]


def run(coro):
    return asyncio.run(coro)


async def _fetch(s: FeedSpec, meta: FeedMeta, timeout: float = 5.0):
    async with make_client(httpx.Timeout(timeout)) as client:
        return await fetch(client, s, meta)


def test_conditional_get_and_304(server: Server) -> None:
    first = run(_fetch(spec(f"{server.url}/list"), FeedMeta()))
    assert first.status == "ok" and first.body == BODY and first.etag == '"v1"'
    meta = FeedMeta(etag=first.etag, last_modified=first.last_modified)
    second = run(_fetch(spec(f"{server.url}/list"), meta))
    assert second.status == "not-modified" and second.body == b""
    headers = server.requests[-1][1]
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Sat, 22 Aug 2026 15:56:45 GMT"
    assert headers["User-Agent"].startswith("outguard/")


def test_timeout_is_an_error_not_a_hang(server: Server) -> None:
    t0 = time.monotonic()
    got = run(_fetch(spec(f"{server.url}/slow"), FeedMeta(), timeout=0.3))
    assert got.status == "error" and "timed out" in (got.error or "")
    assert time.monotonic() - t0 < 1.5


def test_oversized_bodies_are_refused(server: Server) -> None:
    announced = run(_fetch(spec(f"{server.url}/big", max_bytes=1 << 20), FeedMeta()))
    assert announced.status == "error" and "announced" in (announced.error or "")
    streamed = run(_fetch(spec(f"{server.url}/endless", max_bytes=1 << 20), FeedMeta()))
    assert streamed.status == "error" and "over the 1048576 byte limit" in (streamed.error or "")


def test_http_error_status(server: Server) -> None:
    got = run(_fetch(spec(f"{server.url}/missing"), FeedMeta()))
    assert got.status == "error" and "HTTP 500" in (got.error or "")


def test_schedule_interval_and_backoff() -> None:
    s = spec("http://127.0.0.1:1/x", min_interval=600)
    assert is_due(s, FeedMeta(), now=1000.0)
    ok = FeedMeta(attempted_at=1000.0)
    assert not is_due(s, ok, 1599.0) and is_due(s, ok, 1600.0)
    assert backoff(s, 1) == 1200 and backoff(s, 3) == 4800 and backoff(s, 40) == 86400
    assert next_due(s, FeedMeta(attempted_at=1000.0, failures=2)) == 1000.0 + 2400


def test_update_pipeline_keeps_last_good_copy(server: Server, tmp_path: Path) -> None:
    store = FeedStore(tmp_path / "feeds")
    nb = default_never_block()
    now = [10_000.0]
    s = spec(f"{server.url}/list", limits=Limits())

    def go(**kw: object):
        return run(update_feeds([s], store, nb, clock=lambda: now[0], **kw))[0]  # type: ignore[arg-type]

    first = go()
    assert first.status == "updated" and first.count == 59 and store.has_copy("t")
    digest = store.meta("t").digest
    assert go().status == "not-due"  # the minimum interval holds
    now[0] += 3600
    assert go().status == "not-modified"
    server.body, server.etag = b"<html><title>Maintenance</title></html>", '"v2"'
    now[0] += 3600
    refused = go()
    assert refused.status == "refused" and refused.alerts[0].kind == "refused"
    assert store.meta("t").digest == digest and store.read_copy("t").count == 59
    assert store.meta("t").failures == 1
    assert go().status == "not-due"  # backoff: twice the interval
    now[0] += 7200
    server.body, server.etag = BODY + b"203.0.113.9\n", '"v3"'
    changed = go()
    assert changed.status == "updated" and changed.count == 60 and store.meta("t").failures == 0
