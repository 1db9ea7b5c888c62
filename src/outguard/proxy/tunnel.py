"""Bytes between two sockets: a CONNECT tunnel's relay, and the peek at its ClientHello.

Place in the data flow: `server` hands a decided, connected tunnel here. The first bytes from
the client are read (never forwarded before the check) until a TLS ClientHello is complete;
its server name must be the CONNECT host (`tls.parse_hello`), else the client gets a TLS
`unrecognized_name` alert and both ends are closed. Then both directions are copied until each
side has closed, or until neither direction has moved for the idle timeout (one busy direction
keeps a tunnel alive: a long download with a silent client is not idle). The relay hands both
transports from asyncio's streams to two small protocols (`_Side`), with flow control (a full
send buffer pauses the other side's reading) and half-closes passed on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from outguard.proxy import splice
from outguard.proxy.target import BadHostError, Target, parse_host
from outguard.proxy.tls import MAX_HELLO, Hello, needed, parse_hello

# a fatal TLS alert: unrecognized_name (112), in a TLS 1.0 record every client reads
ALERT_UNRECOGNIZED_NAME = b"\x15\x03\x01\x00\x02\x02\x70"
CHUNK = 65536
SPLICE = hasattr(os, "splice")  # Linux, Python 3.10+


async def read_hello(reader: asyncio.StreamReader, first: bytes, timeout: float) -> tuple[bytes, Hello]:
    """The client's first bytes: a whole ClientHello if they start one. ValueError when it is
    malformed, cut short or too slow."""
    data = first
    deadline = time.monotonic() + timeout
    while True:
        if data:
            hello = parse_hello(data)
            if hello.complete:
                return data, hello
            if len(data) >= min(needed(data), MAX_HELLO):
                raise ValueError("a ClientHello longer than one TLS record")
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.001)):
                chunk = await reader.read(CHUNK)
        except TimeoutError:
            raise ValueError("no ClientHello in time") from None
        if not chunk:
            if not data:
                return data, Hello(tls=False, complete=True)
            raise ValueError("the client closed inside its ClientHello")
        data += chunk


def sni_problem(hello: Hello, target: Target) -> str | None:
    """Why the ClientHello's server name does not fit the CONNECT target, or None."""
    if not hello.tls or hello.sni is None:
        return None
    try:
        sni = parse_host(hello.sni)
    except BadHostError as exc:
        return f"TLS server name {hello.sni!r} is unreadable: {exc}"
    if sni != target:
        return f"TLS server name {hello.sni!r} differs from the CONNECT host {target}"
    return None


class _Side(asyncio.Protocol):
    """One end of a tunnel: what it receives goes to the other end's transport."""

    def __init__(self, tunnel: _Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer: _Side = self
        self.eof = False
        self.count = 0
        self.pending = b""  # what the stream had read before the handover

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.tunnel.last = time.monotonic()
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        if self.peer.eof:
            self.tunnel.close()
        return True  # half-closed: the other direction goes on

    def pause_writing(self) -> None:  # our transport's buffer is full: stop the sender
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()


class _Tunnel(splice.IdleTunnel):
    """Two transports handed from streams to `_Side` protocols: no task, no stream buffer and
    one timer per open tunnel (an idle tunnel costs a few kB: 10,000 of them stay small)."""

    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.sides: list[_Side] = []

    def close(self) -> None:
        self.timer.cancel()
        for side in self.sides:
            side.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def _handover(streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]
                    ) -> tuple[socket.socket, bytes, bool]:
    """The stream's socket for `splice`, with what its reader had buffered (for the other
    end) and whether it saw the end of file; what its writer held is sent first."""
    reader, writer = streams
    writer.transport.set_write_buffer_limits(high=0)
    await writer.drain()  # with a limit of 0: until the transport's buffer is empty
    buffered = getattr(reader, "_buffer", None)  # asyncio's StreamReader keeps it there
    pending = bytes(buffered) if buffered else b""
    if buffered:
        buffered.clear()
    return splice.detach(writer), pending, reader.at_eof()


def _take(streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], tunnel: _Tunnel) -> _Side:
    """The stream's transport under a `_Side`; what the stream had buffered, and an end of
    file it saw, are not lost in the handover."""
    reader, writer = streams
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    side = _Side(tunnel, transport)
    transport.set_protocol(side)
    buffered = getattr(reader, "_buffer", None)  # asyncio's StreamReader keeps it there
    side.pending = bytes(buffered) if buffered else b""
    if buffered:
        buffered.clear()
    side.eof = reader.at_eof()
    return side


async def hand_over(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                    idle: float) -> asyncio.Future[None]:
    """Start relaying the tunnel; its end, as a future. On Linux the tunnel runs by itself
    (`splice`: callbacks, no task), so the caller's coroutine, its streams and its HTTP state
    can end now: an idle tunnel then costs only its sockets and a few small objects.
    Elsewhere the relay is awaited here, and the future is done when it returns."""
    if SPLICE:
        ends = [await _handover(streams) for streams in (client, upstream)]
        return splice.start(ends[0], ends[1], idle).done
    await relay(client, upstream, idle)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def relay(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                idle: float) -> tuple[int, int]:
    """Copy both ways until both sides closed or the tunnel idled out: (bytes up, bytes down).
    On Linux by splice(2) (`splice`), else through asyncio protocols."""
    if SPLICE:
        ends = [await _handover(streams) for streams in (client, upstream)]
        return await splice.relay(ends[0], ends[1], idle)
    tunnel = _Tunnel(idle)
    down, up = _take(client, tunnel), _take(upstream, tunnel)
    down.peer, up.peer = up, down
    tunnel.sides = [down, up]
    for side in (down, up):
        if side.pending:
            side.data_received(side.pending)
        if side.eof:
            side.eof_received()
        side.transport.resume_reading()  # a stream may have paused it (its buffer was full)
    if any(s.transport.is_closing() for s in (down, up)):
        tunnel.close()
    await tunnel.done
    return down.count, up.count
