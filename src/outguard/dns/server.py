"""The resolver process's sockets: UDP and TCP listeners around `resolver.Resolver`.

Thin asyncio I/O, used by `dns.process` (the unprivileged resolver process) on sockets it bound
before dropping root. Cache hits are answered in the UDP reader callback with no task at all
(`Resolver.fast`: a dict lookup on the query bytes); everything else gets a task.

One asyncio reader on one socket, not worker processes on SO_REUSEPORT: with the fast path the
resolver matches dnsmasq's cached-answer rate in bench/dns.py, and one process keeps one
`SetTracker`, which is what makes "the set holds the address before the answer" hold.

TCP is bounded (RFC 7766 leaves the numbers to the server): at most `max_clients` connections;
one waiting for its next query is idle and closed after `TCP_IDLE_S`; when a new client needs
room, the longest-idle connection is closed at once (so a flood of idle connections can neither
exhaust the file descriptors nor lock other clients out). A connection with a query in progress
is never closed for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from outguard.dns.resolver import Resolver, Stats
from outguard.dns.upstream import Upstreams

TCP_IDLE_S = 10.0
MAX_TCP_CLIENTS = 256


class _UdpServer:
    """The UDP listener. Reads every queued datagram per wake-up (asyncio's datagram transport
    reads one per event-loop turn, which costs more than answering from the cache) and sends
    cache hits straight from the socket."""

    BATCH = 64

    def __init__(self, resolver: Resolver, sock: socket.socket) -> None:
        self.resolver = resolver
        self.sock = sock
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recv, send, fast = self.sock.recvfrom, self.sock.sendto, self.resolver.fast
        for _ in range(self.BATCH):
            try:
                data, addr = recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error queued on the socket: next datagram
                continue
            reply = fast(data)
            if reply is not None:
                self._send(reply, addr, send)
                continue
            task = self.loop.create_task(self._slow(data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    def _send(reply: bytes, addr: Any, send: Callable[[bytes, Any], int]) -> None:
        # a full socket buffer or a client gone: it will ask again
        with contextlib.suppress(OSError):
            send(reply, addr)

    async def _slow(self, data: bytes, addr: Any) -> None:
        reply = await self.resolver.handle(data, (str(addr[0]), int(addr[1])))
        if reply is not None:
            self._send(reply, addr, self.sock.sendto)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        # answers still being resolved would send events to a sink that closes next
        for task in self.tasks:
            task.cancel()


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    idle_since: float
    busy: bool = False


class _TcpServer:
    """TCP clients, bounded (see the module docstring)."""

    def __init__(self, resolver: Resolver, sock: socket.socket, max_clients: int,
                 idle: float) -> None:
        self.resolver, self.sock = resolver, sock
        self.max_clients, self.idle = max_clients, idle
        self.conns: set[_Conn] = set()
        self.evicted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, sock=self.sock)

    def _make_room(self) -> bool:
        if len(self.conns) < self.max_clients:
            return True
        idle = [c for c in self.conns if not c.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        self.conns.discard(oldest)
        oldest.writer.transport.abort()
        self.evicted += 1
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._make_room():
            writer.transport.abort()
            return
        conn = _Conn(writer, time.monotonic())
        self.conns.add(conn)
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            while True:
                conn.busy, conn.idle_since = False, time.monotonic()
                async with asyncio.timeout(self.idle):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                conn.busy = True
                reply = await self.resolver.handle(data, (str(peer[0]), int(peer[1])), tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                async with asyncio.timeout(self.idle):  # a client that does not read: gone
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.conns.discard(conn)
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.writer.transport.abort()
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)


def listen_socket(family: int, kind: int, addr: tuple[str, int]) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket."""
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.bind(addr)
        if kind == socket.SOCK_STREAM:
            sock.listen(256)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Service:
    """The resolver on its two listening sockets, asking `upstreams`."""

    def __init__(self, resolver: Resolver, upstreams: Upstreams, udp_sock: socket.socket,
                 tcp_sock: socket.socket, *, max_tcp: int = MAX_TCP_CLIENTS,
                 tcp_idle: float = TCP_IDLE_S) -> None:
        self.resolver, self.upstreams = resolver, upstreams
        self._udp_sock = udp_sock
        self.tcp = _TcpServer(resolver, tcp_sock, max_tcp, tcp_idle)
        self.udp: _UdpServer | None = None

    async def start(self) -> None:
        self.udp = _UdpServer(self.resolver, self._udp_sock)
        await self.tcp.start()

    def stats(self) -> Stats:
        """The resolver's counters with the upstreams' and the TCP listener's."""
        s = self.resolver.stats
        return replace(s, by_rcode=dict(s.by_rcode), tcp_open=len(self.tcp.conns),
                       tcp_evicted=self.tcp.evicted,
                       upstream_queries=dict(self.upstreams.queries),
                       upstream_failures=dict(self.upstreams.failures))

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        else:
            self._udp_sock.close()
        await self.tcp.close()
        self.upstreams.close()
