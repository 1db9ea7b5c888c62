"""Bytes between two sockets: a CONNECT tunnel's relay, and the peek at its ClientHello.

Place in the data flow: `server` hands a decided, connected tunnel here. The first bytes from
the client are read (never forwarded before the check) until a TLS ClientHello is complete;
its server name must be the CONNECT host (`tls.parse_hello`), else the client gets a TLS
`unrecognized_name` alert and both ends are closed. Then both directions are copied until each
side has closed, or until neither direction has moved for the idle timeout (one busy direction
keeps a tunnel alive: a long download with a silent client is not idle).
"""

from __future__ import annotations

import asyncio
import time

from outguard.proxy.target import BadHostError, Target, parse_host
from outguard.proxy.tls import MAX_HELLO, Hello, needed, parse_hello

# a fatal TLS alert: unrecognized_name (112), in a TLS 1.0 record every client reads
ALERT_UNRECOGNIZED_NAME = b"\x15\x03\x01\x00\x02\x02\x70"
CHUNK = 65536


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
            chunk = await asyncio.wait_for(reader.read(CHUNK), max(left, 0.001))
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


class _Activity:
    def __init__(self) -> None:
        self.last = time.monotonic()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: float,
                activity: _Activity, counter: list[int]) -> None:
    while True:
        try:
            data = await asyncio.wait_for(src.read(CHUNK), idle)
        except TimeoutError:
            if time.monotonic() - activity.last < idle:
                continue  # the other direction is busy
            raise
        if not data:
            if dst.can_write_eof():
                dst.write_eof()
            return
        activity.last = time.monotonic()
        counter[0] += len(data)
        dst.write(data)
        await dst.drain()


async def relay(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                idle: float) -> tuple[int, int]:
    """Copy both ways until both sides closed or the tunnel idled out: (bytes up, bytes down)."""
    activity = _Activity()
    up, down = [0], [0]
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(client[0], upstream[1], idle, activity, up))
            group.create_task(_pump(upstream[0], client[1], idle, activity, down))
    except* (TimeoutError, ConnectionError, OSError):
        pass  # an idle or reset tunnel ends; both ends are closed by the caller
    return up[0], down[0]
