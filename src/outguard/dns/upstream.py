"""Asking the upstream servers: UDP first, TCP when the answer is truncated, failover in order.

Thin asyncio I/O around `wire`. Sockets are made by a factory the caller passes in, so that they
are created inside the resolver's network namespace (a socket belongs to the namespace it was
created in, whatever thread uses it later). One connected UDP socket per upstream, answers
matched by random id and by question; a server that times out is tried last for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from outguard.dns.wire import Query, build_query, response_matches

SocketFactory = Callable[[int, int], socket.socket]  # (family, type) → socket in the namespace
PENALTY_S = 30.0
LOG_EVERY_S = 60.0
log = logging.getLogger("outguard.dns")
_RETRY_RCODES = frozenset({2, 5})  # SERVFAIL, REFUSED: another server may do better


class UpstreamError(Exception):
    """No upstream gave an answer."""


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        waiter = self.pending.get(int.from_bytes(data[:2], "big"))
        if waiter is not None and response_matches(data, int.from_bytes(data[:2], "big"), waiter[0]) \
                and not waiter[1].done():
            waiter[1].set_result(data)

    def error_received(self, exc: Exception) -> None:
        for _q, fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)


class Upstream:
    def __init__(self, addr: tuple[str, int], make_socket: SocketFactory) -> None:
        self.addr = addr
        self.family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.make_socket = make_socket
        self.down_until = 0.0
        self._udp: _Udp | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def _endpoint(self) -> _Udp:
        if self._udp is None:
            sock = self.make_socket(self.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.addr)
            loop = asyncio.get_running_loop()
            transport, proto = await loop.create_datagram_endpoint(_Udp, sock=sock)
            self._transport, self._udp = transport, proto
        return self._udp

    async def udp(self, query: Query, timeout: float) -> bytes:
        proto = await self._endpoint()
        while (txid := secrets.randbits(16)) in proto.pending:
            pass
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        proto.pending[txid] = (query.question, fut)
        try:
            assert self._transport is not None
            self._transport.sendto(build_query(query, txid))
            return await asyncio.wait_for(fut, timeout)
        finally:
            del proto.pending[txid]

    async def tcp(self, query: Query, timeout: float) -> bytes:
        sock = self.make_socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        writer = None
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, self.addr)
                reader, writer = await asyncio.open_connection(sock=sock)
                txid = secrets.randbits(16)
                msg = build_query(query, txid)
                writer.write(struct.pack("!H", len(msg)) + msg)
                await writer.drain()
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
        except BaseException:
            if writer is None:
                sock.close()
            raise
        finally:
            if writer is not None:
                writer.close()
        if not response_matches(data, txid, query.question):
            raise UpstreamError(f"{self} answered another question over TCP")
        return data

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def __str__(self) -> str:
        host = f"[{self.addr[0]}]" if ":" in self.addr[0] else self.addr[0]
        return f"{host}:{self.addr[1]}"


class Upstreams:
    """Every upstream, with counters per server (`queries`, `failures`: the resolver's stats)
    and a log line when one fails: at once for the first failure, then at most one a minute
    (with the count of those not logged), and one when it answers again."""

    def __init__(self, addrs: tuple[tuple[str, int], ...], make_socket: SocketFactory,
                 timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = [Upstream(a, make_socket) for a in addrs]
        self.timeout = timeout
        self.clock = clock
        self.queries: dict[str, int] = {str(s): 0 for s in self.servers}
        self.failures: dict[str, int] = {str(s): 0 for s in self.servers}
        # server → [time of its last log line, failures not logged since, a failure logged and
        # no recovery yet]: at most one line a minute, however the server flaps
        self._log: dict[str, list[Any]] = {str(s): [-LOG_EVERY_S, 0, False] for s in self.servers}

    def _failed(self, server: Upstream, problem: str) -> None:
        key = str(server)
        self.failures[key] += 1
        state = self._log[key]
        now = self.clock()
        if now - state[0] < LOG_EVERY_S:
            state[1] += 1
            return
        more = f" ({state[1]} more failures since the last report)" if state[1] else ""
        log.warning("DNS upstream %s failed: %s%s", key, problem, more)
        state[:] = [now, 0, True]

    def _answered(self, server: Upstream) -> None:
        state = self._log[str(server)]
        if state[2] and self.clock() - state[0] >= 1.0:
            log.warning("DNS upstream %s answers again", server)
            state[2] = False

    async def query(self, query: Query, tcp_first: bool = False) -> bytes:
        """The first usable answer; servers in order, those that failed lately at the end."""
        now = self.clock()
        order = sorted(self.servers, key=lambda s: s.down_until > now)
        problems = []
        last: bytes | None = None
        for server in order:
            self.queries[str(server)] += 1
            try:
                data = await (server.tcp(query, self.timeout) if tcp_first
                              else server.udp(query, self.timeout))
                if not tcp_first and data[2] & 0x02:  # TC: the whole answer needs TCP
                    data = await server.tcp(query, self.timeout)
            except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError,
                    UpstreamError) as exc:
                server.down_until = self.clock() + PENALTY_S
                problem = f"{server}: {type(exc).__name__} {exc}".strip()
                problems.append(problem)
                self._failed(server, problem)
                continue
            if data[3] & 0x0F in _RETRY_RCODES:
                last = data
                problems.append(f"{server}: rcode {data[3] & 0x0F}")
                self._failed(server, f"rcode {data[3] & 0x0F}")
                continue
            server.down_until = 0.0
            self._answered(server)
            return data
        if last is not None:
            return last
        raise UpstreamError("no upstream answered: " + "; ".join(problems))

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(OSError):
                server.close()
