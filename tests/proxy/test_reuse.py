"""The proxy's per-request savings keep their guarantees: a cached answer expires with its
TTL and a failure is never kept (`resolve.Cached`); a kept upstream connection is handed to
the next request only for the same host:port, at an address that request's check allowed,
when its last exchange ended cleanly and the upstream keeps it open (`exchange.Slot`).
Real sockets (a socketpair) and real h11 state; no mocks."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import h11
import pytest

from outguard.proxy.exchange import Slot, Upstream
from outguard.proxy.resolve import Cached, ResolveError
from outguard.proxy.target import IPAddress

A = ipaddress.ip_address("203.0.113.10")
B = ipaddress.ip_address("203.0.113.11")
KEY = ("api.example.test", 80)


def test_an_answer_is_kept_for_its_ttl_and_a_failure_never() -> None:
    asked: list[str] = []
    ttls = {"api.example.test": 0.2, "short.example.test": 0.0}

    async def timed(name: str) -> tuple[list[IPAddress], float]:
        asked.append(name)
        if name not in ttls:
            raise ResolveError(f"cannot resolve {name}")
        return [A], ttls[name]

    async def main() -> None:
        cached = Cached(timed)
        for _ in range(3):
            assert await cached("api.example.test") == [A]
            assert await cached("short.example.test") == [A]  # TTL 0: asked every time
            with pytest.raises(ResolveError):
                await cached("missing.example.test")
        got = await cached("api.example.test")
        got.append(B)  # a caller's change does not reach the cache
        assert await cached("api.example.test") == [A]
        await asyncio.sleep(0.25)
        assert await cached("api.example.test") == [A]

    asyncio.run(main())
    assert asked.count("api.example.test") == 2  # once, then again after its TTL
    assert asked.count("short.example.test") == 3
    assert asked.count("missing.example.test") == 3


async def _upstream(response: bytes) -> tuple[Upstream, socket.socket]:
    """An upstream whose exchange ended with `response`, and the far end of its socket."""
    ours, far = socket.socketpair()
    streams = await asyncio.open_connection(sock=ours)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "api.example.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(response)
    while conn.next_event() not in (h11.NEED_DATA, h11.PAUSED):
        pass
    return Upstream(KEY, A, streams, conn), far


KEEP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_kept_connection_serves_only_its_host_port_at_a_checked_address() -> None:
    async def main() -> None:
        for key, checked, reused in ((KEY, [A], True), (KEY, [B, A], True),
                                     (KEY, [B], False),  # its address is no longer allowed
                                     (("api.example.test", 8080), [A], False),
                                     (("other.example.test", 80), [A], False)):
            up, far = await _upstream(KEEP)
            slot = Slot()
            slot.give(up)
            assert slot.kept is up
            got = slot.take(key, checked)
            assert (got is up) is reused, (key, checked)
            assert up.streams[1].is_closing() is not reused  # a refused one is closed
            if got is not None:
                assert got.reused and got.conn.our_state is h11.IDLE
            assert slot.kept is None  # taken: never shared by two requests
            slot.close()
            up.close()
            far.close()

    asyncio.run(main())


def test_a_connection_the_upstream_closes_or_will_close_is_not_kept() -> None:
    async def main() -> None:
        up, far = await _upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                  b"Connection: close\r\n\r\nok")
        slot = Slot()
        slot.give(up)
        assert slot.kept is None and up.streams[1].is_closing()
        far.close()

        up, far = await _upstream(KEEP)
        slot.give(up)
        far.close()  # the upstream closes the idle connection
        for _ in range(20):
            await asyncio.sleep(0.01)
            if up.streams[0].at_eof():
                break
        assert slot.take(KEY, [A]) is None and up.streams[1].is_closing()

        up, far = await _upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok")
        slot.give(up)  # the response is not complete: the connection is mid-message
        assert slot.kept is None
        far.close()

    asyncio.run(main())
