"""Upstream failures are logged when they happen (rate-limited) and counted per upstream.

The upstream is a UDP port on loopback where nothing listens: the kernel answers with ICMP port
unreachable, a real failure."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from outguard.dns.upstream import UpstreamError, Upstreams
from outguard.dns.wire import parse_query
from tests.dns.helpers import query


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failures_are_logged_at_once_then_once_a_minute_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    port = _dead_port()
    now = [1000.0]
    ups = Upstreams((("127.0.0.1", port),), socket.socket, 0.5, clock=lambda: now[0])
    q = parse_query(query("api.example.test"))

    async def ask(times: int) -> None:
        for _ in range(times):
            with pytest.raises(UpstreamError, match=f"127.0.0.1:{port}"):
                await ups.query(q)
            now[0] += 1

    async def scenario() -> None:
        try:
            await ask(5)
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and lines[0].startswith(f"DNS upstream 127.0.0.1:{port} failed:")
            now[0] += 60
            await ask(1)
            assert "(4 more failures since the last report)" in caplog.records[-1].getMessage()
        finally:
            ups.close()
    caplog.set_level(logging.WARNING, logger="outguard.dns")
    asyncio.run(scenario())
    assert ups.failures == {f"127.0.0.1:{port}": 6} and ups.queries == {f"127.0.0.1:{port}": 6}
