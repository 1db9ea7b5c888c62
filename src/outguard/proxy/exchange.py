"""One plain-HTTP exchange with an upstream, and the upstream connection a client keeps.

Place in the data flow: `server.forward` decides a request (by name, then every resolved
address), then copies it here to an upstream connection and the response back (h11 on both
sides). A kept-alive client's next request to the same host and port goes on the upstream
connection of its last one (`Slot`), but only when that connection's address is one of the
addresses just checked for this request against the policy in force, its last exchange
ended cleanly with both sides willing to keep it, and the upstream has not closed it; else
it is closed and `server` opens a new one to a checked address. A kept connection is closed
with its client connection. A request that fails on a reused connection before any answer
and before any body byte went up is sent once more on a new connection (the upstream may
close an idle connection just as the request goes out: RFC 9112 §9.3.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import h11

from outguard.proxy import http
from outguard.proxy.target import IPAddress

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MAX_RESPONSE_HEAD = 1 << 20


class RefusedError(Exception):
    """A request the proxy answers itself; `answer` is what the client gets (an HTTP error
    response, unless a TLS alert is what the client can read)."""

    def __init__(self, status: int, reason: str, rule: str | None = None,
                 answer: bytes | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.rule = status, reason, rule
        self.answer = answer if answer is not None else http.error_response(status, reason, rule)


@dataclass
class Upstream:
    """An upstream connection: for (host, port), to `addr`, with its h11 state."""

    key: tuple[str, int]
    addr: IPAddress | None
    streams: Streams
    conn: h11.Connection
    reused: bool = False

    @classmethod
    def opened(cls, key: tuple[str, int], streams: Streams) -> Upstream:
        peer = streams[1].get_extra_info("peername")
        try:
            addr: IPAddress | None = ipaddress.ip_address(str(peer[0]).partition("%")[0])
        except (TypeError, ValueError, IndexError):
            addr = None  # never matches a checked address: never reused
        return cls(key, addr, streams, h11.Connection(
            h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD))

    def idle(self) -> bool:
        """Its last exchange is complete, both sides keep it, and the upstream has not
        closed it."""
        return (self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                and not self.streams[0].at_eof() and not self.streams[1].is_closing())

    def close(self) -> None:
        self.streams[1].close()


class Slot:
    """The upstream connection one client connection keeps between its requests."""

    def __init__(self) -> None:
        self.kept: Upstream | None = None

    def take(self, key: tuple[str, int], checked: list[IPAddress]) -> Upstream | None:
        """The kept connection if it serves `key` at one of the `checked` addresses; any
        other is closed."""
        kept, self.kept = self.kept, None
        if kept is None:
            return None
        if kept.key == key and kept.addr in checked and kept.idle():
            kept.conn.start_next_cycle()
            kept.reused = True
            return kept
        kept.close()
        return None

    def give(self, up: Upstream) -> None:
        """Keep `up` for the next request if it can serve one; close it otherwise."""
        if self.kept is not None:
            self.kept.close()
        self.kept = up if up.idle() else None
        if self.kept is None:
            up.close()

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None


async def copy_body(src: h11.Connection, reader: asyncio.StreamReader,
                    dst: h11.Connection, writer: asyncio.StreamWriter, timeout: float) -> bool:
    """The request body, as it comes, to the upstream; whether any body byte went up."""
    sent = False
    while True:
        event = await next_event(src, reader, timeout, "client")
        if isinstance(event, h11.Data):
            sent = sent or bool(event.data)
            writer.write(dst.send(h11.Data(data=event.data)) or b"")
            await writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            writer.write(dst.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return sent


async def copy_response(src: h11.Connection, reader: asyncio.StreamReader,
                        dst: h11.Connection, writer: asyncio.StreamWriter,
                        timeout: float) -> int:
    """The upstream's response, as it comes, to the client; its status. RefusedError(502)
    when nothing of it reached the client."""
    status = 0
    while True:
        try:
            event = await next_event(src, reader, timeout, "upstream")
        except RefusedError:
            if status:  # the head went out already: all the proxy can do is close
                raise ConnectionError("the upstream failed mid-response") from None
            raise
        if isinstance(event, h11.InformationalResponse):
            continue  # 100 Continue was ours to give; 1xx others are not forwarded
        if isinstance(event, h11.Response):
            status = event.status_code
            writer.write(dst.send(h11.Response(
                status_code=status, reason=event.reason,
                headers=http.response_headers(list(event.headers)))) or b"")
        elif isinstance(event, h11.Data):
            writer.write(dst.send(h11.Data(data=event.data)) or b"")
        elif isinstance(event, h11.EndOfMessage):
            writer.write(dst.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return status
        await writer.drain()


async def next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float,
                     side: str) -> h11.Event | type[h11.PAUSED]:
    """The next h11 event of one side; RefusedError(400/502) when that side breaks the protocol,
    stalls for `timeout` or closes early."""
    status = 400 if side == "client" else 502
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise RefusedError(status, f"malformed HTTP from the {side}: {exc}") from None
        if isinstance(event, h11.ConnectionClosed):
            raise RefusedError(status, f"the {side} closed the connection early")
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]  # NEED_DATA is excluded just above
        try:
            async with asyncio.timeout(timeout):
                data = await reader.read(65536)
        except TimeoutError:
            raise RefusedError(408 if side == "client" else 502,
                               f"the {side} sent nothing for {timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise RefusedError(status, f"the {side}'s connection failed: {exc}") from None
        conn.receive_data(data)
