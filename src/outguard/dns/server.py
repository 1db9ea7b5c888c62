"""The DNS forwarder's sockets: UDP and TCP listeners, the kernel-set writer, start and stop.

Thin asyncio I/O around `resolver.Resolver`. `serve_dns` is what `outguard run` (and
`outguard dns serve`) call; every socket is created inside the resolver's network namespace on a
`NetnsThread`, then driven by the caller's event loop. Cache hits are answered in the UDP reader callback with
no task at all (`Resolver.fast`: a dict lookup on the query bytes); everything else gets a task.

One asyncio reader on one socket, not worker processes on SO_REUSEPORT: with the fast path the
resolver matches dnsmasq's cached-answer rate in bench/dns.py, and one process keeps one
`SetTracker`, which is what makes "the set holds the address before the answer" hold.

Kernel writes are batched: answers that arrive while a libnftables transaction runs are written
together in the next one (each answer still waits for the transaction holding its addresses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from outguard.compile.ir import Ruleset
from outguard.dns import cache as dcache
from outguard.dns.cache import SetItem
from outguard.dns.client import Attributor, Client, sockdiag_attributor
from outguard.dns.config import DnsSettings
from outguard.dns.events import EventSink, JsonlEvents
from outguard.dns.names import NamePolicy, load_blocklists
from outguard.dns.resolver import Resolver
from outguard.dns.upstream import Upstreams
from outguard.dns.wire import Query
from outguard.errors import KernelError
from outguard.kernel.fqdnsets import FqdnSets, JsonKernel
from outguard.kernel.netns import NetnsThread

log = logging.getLogger("outguard.dns")
CACHE_FILE = "dns-cache.json"
SAVE_EVERY_S = 30.0
TCP_IDLE_S = 10.0


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
        # answers still being resolved would write events to sinks that close next
        for task in self.tasks:
            task.cancel()


class _SetWriter:
    """Batches concurrent set writes into one transaction on a worker thread."""

    def __init__(self, sets: FqdnSets) -> None:
        self.sets = sets
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="og-dns-sets")
        self.pending: list[tuple[list[SetItem], asyncio.Future[None]]] = []
        self.flushing = False
        self.transactions = 0

    async def write(self, items: list[SetItem]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((items, fut))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                groups = [batch] if len(batch) == 1 else [batch, *([b] for b in batch)]
                for group in groups:
                    if all(f.done() for _i, f in group):
                        continue
                    items = [i for its, _f in group for i in its]
                    try:
                        self.transactions += 1
                        await loop.run_in_executor(self.pool, self.sets.write, items)
                    except KernelError as exc:
                        if len(group) == 1:  # retried alone: this answer's own failure
                            group[0][1].set_exception(exc)
                        continue  # a batch failed: retry each answer alone (next group)
                    for _i, fut in group:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self.flushing = False

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class DnsHandle:
    """A running resolver. `await close()` stops it and saves the cache."""

    def __init__(self, resolver: Resolver, settings: DnsSettings, state_dir: Path) -> None:
        self.resolver = resolver
        self.settings = settings
        self.state_dir = state_dir
        self.closers: list[Callable[[], Any]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.udp: _UdpServer | None = None
        self.writer: _SetWriter | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.listen

    def update(self, ruleset: Ruleset) -> None:
        """Apply a new policy's rules and dns settings (listen/upstreams need a restart)."""
        assert ruleset.dns is not None
        self.resolver.update(ruleset.dns, NamePolicy.of(ruleset, load_blocklists(ruleset.dns.blocklists)))

    def save(self) -> None:
        dcache.save(self.state_dir / CACHE_FILE, self.resolver.cache, self.resolver.tracker,
                    self.resolver.clock())

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for closer in reversed(self.closers):
            with contextlib.suppress(OSError):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
        self.save()


def _listen_socket(family: int, kind: int, addr: tuple[str, int]) -> socket.socket:
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


async def _tcp_client(resolver: Resolver, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername") or ("?", 0)
    try:
        while True:
            async with asyncio.timeout(TCP_IDLE_S):
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
            reply = await resolver.handle(data, (str(peer[0]), int(peer[1])), tcp=True)
            if reply is None:
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_dns(settings: DnsSettings, ruleset: Ruleset, *, state_dir: Path,
                    netns: str | None = None, kernel: JsonKernel | None = None,
                    events: EventSink | None = None, attributor: Attributor | None = None,
                    clock: Callable[[], float] = time.time) -> DnsHandle:
    """Start the resolver for `ruleset` (lowered with its `dns:` section) and return its handle.

    `kernel` defaults to libnftables in `netns`; `events` to JSON lines in `state_dir`;
    `attributor` to sock_diag + /proc in `netns`."""
    loop = asyncio.get_running_loop()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    thread = NetnsThread(netns)
    closers: list[Callable[[], Any]] = [thread.close]
    try:
        if kernel is None:
            from outguard.kernel.libnft import Nft  # noqa: PLC0415

            nft = Nft(netns)
            closers.append(nft.close)
            kernel = nft
        if events is None:
            jsonl = JsonlEvents(state_dir)
            closers.append(jsonl.close)
            events = jsonl
        if attributor is None:
            attributor = thread.call(sockdiag_attributor, None)
        family = socket.AF_INET6 if ":" in settings.listen[0] else socket.AF_INET
        udp_sock = thread.call(_listen_socket, family, socket.SOCK_DGRAM, settings.listen)
        tcp_sock = thread.call(_listen_socket, family, socket.SOCK_STREAM, settings.listen)
    except BaseException:
        for closer in reversed(closers):
            closer()
        raise
    upstreams = Upstreams(settings.upstreams, lambda f, k: thread.call(socket.socket, f, k),
                          settings.timeout)
    writer = _SetWriter(FqdnSets(kernel))
    attr_pool = ThreadPoolExecutor(1, thread_name_prefix="og-dns-attr")
    busy = 0

    async def attribute(q: Query, client: tuple[str, int], tcp: bool) -> Client:
        nonlocal busy
        if busy >= 16:  # a flood of blocked queries: answer them, skip who asked
            return Client()
        busy += 1
        try:
            assert attributor is not None
            return await loop.run_in_executor(
                attr_pool, lambda: thread.call(attributor, "tcp" if tcp else "udp", client[0],
                                               client[1], *settings.listen))
        finally:
            busy -= 1

    cache, tracker = dcache.load(state_dir / CACHE_FILE, clock())
    names = NamePolicy.of(ruleset, load_blocklists(settings.blocklists))
    resolver = Resolver(settings, names, ask=upstreams.query, write=writer.write, events=events,
                        attribute=attribute, cache=cache, tracker=tracker, clock=clock)
    handle = DnsHandle(resolver, settings, state_dir)
    handle.writer = writer
    proto = _UdpServer(resolver, udp_sock)
    server = await asyncio.start_server(lambda r, w: _tcp_client(resolver, r, w), sock=tcp_sock)
    handle.udp = proto

    async def periodic() -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            tracker.prune(clock())
            resolver.recent.prune(clock())
            try:
                handle.save()
            except OSError as exc:
                log.warning("cannot save the DNS cache: %s", exc)

    handle.tasks.append(loop.create_task(periodic()))

    async def stop_server() -> None:
        server.close()
        await server.wait_closed()

    handle.closers = [*closers, writer.close, attr_pool.shutdown, upstreams.close,
                      proto.close, stop_server]
    return handle


class ResolverThread:
    """`serve_dns` on an event loop of its own thread (tests, benchmarks, `outguard dns serve`)."""

    def __init__(self, settings: DnsSettings, ruleset: Ruleset, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="og-dns", daemon=True)
        self._thread.start()
        try:
            self.handle: DnsHandle = asyncio.run_coroutine_threadsafe(
                serve_dns(settings, ruleset, **kwargs), self.loop).result(30)
        except BaseException:
            self._stop_loop()
            raise

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.handle.close(), self.loop).result(30)
        finally:
            self._stop_loop()

