"""The resolver process: `python -m outguard.dns.process FD`, started by the agent.

Place in the data flow: `dns.supervisor` (in the agent) spawns it through `kernel.privsep` with
one end of a socket pair (`dns.ipc`). Still root, it reads its `init`, enters the network
namespace, binds the listening sockets and loads every module it will ever need (dnspython
imports record classes lazily; after the drop the interpreter's files may be out of reach),
then drops to the resolver's user for good: no groups, no capabilities, `no_new_privs`. From
then on every socket it creates, the upstream ones included, carries that uid, which is the
only one the kernel lets reach the upstreams (`meta skuid`). What needs root, it asks the agent
for: kernel set writes (`write`, awaited before the answer leaves) and the process behind a
client (`attr`). Its events, counters and cache snapshots go to the agent, which stores them.

It ends on `stop`, or when the agent goes away (end of the pipe): with no agent there is no
resolver, and new names fail closed. SIGTERM and SIGINT are ignored: they come to the whole
process group (systemd, ^C), and the agent's `stop` is what lets it hand over its last state.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib
import itertools
import logging
import signal
import socket
import sys
import time
from typing import Any

import dns.message
import dns.rdtypes.ANY
import dns.rdtypes.CH
import dns.rdtypes.IN
import dns.rrset
import orjson

from outguard.dns import cache as dcache
from outguard.dns import ipc
from outguard.dns.answers import Resolved
from outguard.dns.cache import SetItem, entry_of
from outguard.dns.client import Client
from outguard.dns.events import DnsEvent
from outguard.dns.resolver import Resolver, Stats
from outguard.dns.server import MAX_TCP_CLIENTS, Service, listen_socket
from outguard.dns.upstream import Upstreams
from outguard.dns.wire import Query, parse_query
from outguard.errors import OutguardError
from outguard.kernel import privsep
from outguard.ruleset.names import NamePolicy

log = logging.getLogger("outguard.dns")
REQUEST_TIMEOUT_S = 5.0
STATS_EVERY_S = 1.0
SAVE_EVERY_S = 30.0
MAX_BUFFERED = 32 << 20  # bytes waiting for the agent; beyond, events are dropped (counted)


def _preload() -> None:
    """Import what the resolver may import later, while the files can still be read (after the
    drop the interpreter's own directory may be closed to the resolver's user): dnspython's
    record classes, the codecs, and one run of the parsers over every kind of record."""
    for package in (dns.rdtypes.ANY, dns.rdtypes.IN, dns.rdtypes.CH):
        for name in package.__all__:
            importlib.import_module(f"{package.__name__}.{name}")
    for codec in ("ascii", "latin-1", "utf-8", "idna", "punycode"):
        codecs.lookup(codec)
    "bücher.test".encode("idna")
    name = "a.b\\255c.example.test."
    query = dns.message.make_query(name, "A", use_edns=0)
    reply = dns.message.make_response(query)
    for rtype, value in (("A", "192.0.2.1"), ("AAAA", "2001:db8::1"), ("TXT", "x"),
                         ("CNAME", "c.example.test."), ("MX", "1 m.example.test.")):
        reply.answer.append(dns.rrset.from_text(name, 1, "IN", rtype, value))
    wire = reply.to_wire()
    entry_of(wire, parse_query(query.to_wire()).qname, time.time())
    orjson.loads(orjson.dumps({"x": [1.5, "y"]}))


class Agent:
    """The resolver's side of the pipe: requests with replies, and one-way reports."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.dropped = 0

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(ipc.frame(msg))

    def report(self, msg: dict[str, Any]) -> None:
        """A message that may be dropped when the agent does not keep up."""
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            self.dropped += 1
            return
        self.send(msg)

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        rid = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            self.send({**msg, "id": rid})
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await fut
        finally:
            self.pending.pop(rid, None)

    def answered(self, msg: dict[str, Any]) -> None:
        fut = self.pending.get(msg.get("id", -1))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def write(self, items: list[SetItem]) -> bool:
        """True: the kernel holds them; False: no table of ours to hold them (nothing is
        filtered: the answer goes all the same)."""
        try:
            got = await self.request({"t": "write", "items": [list(i) for i in items]})
        except (TimeoutError, ConnectionError) as exc:  # the answer is SERVFAIL, not released
            raise OutguardError(f"the agent did not write the kernel sets: {exc!r}") from exc
        if got.get("error"):
            raise OutguardError(f"kernel set write failed: {got['error']}")
        return got.get("held") is not False

    async def attribute(self, q: Query, client: tuple[str, int], tcp: bool) -> Client:
        got = await self.request({"t": "attr", "proto": "tcp" if tcp else "udp",
                                  "addr": client[0], "port": client[1]})
        return ipc.client_from_json(got.get("client") or {})

    def append(self, event: DnsEvent) -> None:  # the resolver's EventSink
        self.report({"t": "event", "e": event.__dict__})

    def resolved(self, resolved: Resolved, at: float) -> None:
        self.report({"t": "names", "chain": list(resolved.chain), "v4": resolved.v4,
                     "v6": resolved.v6, "at": at})


def _read_init(sock: socket.socket) -> dict[str, Any]:
    sock.setblocking(True)
    head = _recv_exactly(sock, 4)
    size = int.from_bytes(head, "big")
    msg: dict[str, Any] = orjson.loads(_recv_exactly(sock, size))
    if msg.get("t") != "init":
        raise ipc.IpcError("the first message is no init")
    return msg


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise ipc.IpcError("the agent went away before init")
        buf += chunk
    return bytes(buf)


async def _serve(sock: socket.socket, init: dict[str, Any], udp: socket.socket,
                 tcp: socket.socket, max_tcp: int) -> None:
    reader, writer = await asyncio.open_connection(sock=sock, limit=ipc.MAX_FRAME)
    agent = Agent(reader, writer)
    settings = ipc.settings_from_json(init["settings"])
    names = NamePolicy.from_json(init["names"])
    cache, tracker = dcache.restore(init.get("cache"), time.time())
    # What the kernel sets hold is known only for writes since this start: the table may have
    # been made anew (a reboot, `remove` + `apply`) while the saved cache says "held"; an
    # answer from the cache is then written again.
    tracker.expiry.clear()
    upstreams = Upstreams(settings.upstreams, socket.socket, settings.timeout)
    resolver = Resolver(settings, names, ask=upstreams.query, write=agent.write, events=agent,
                        attribute=agent.attribute, cache=cache, tracker=tracker,
                        on_resolved=agent.resolved)
    service = Service(resolver, upstreams, udp, tcp, max_tcp=max_tcp)
    await service.start()
    agent.send({"t": "ready", "listen": list(settings.listen)})
    reports = asyncio.create_task(_report(agent, service))
    try:
        while (msg := await _next(reader)) is not None:
            kind = msg["t"]
            if kind in ("done", "who"):
                agent.answered(msg)
            elif kind == "policy":
                resolver.update(ipc.settings_from_json(msg["settings"]),
                                NamePolicy.from_json(msg["names"]))
            elif kind == "stop":
                break
    finally:
        reports.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reports
        await service.close()
        with contextlib.suppress(OSError, ConnectionError):
            _send_state(agent, service)
            agent.send({"t": "bye"})
            await writer.drain()
        writer.close()


async def _next(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        return await ipc.read_frame(reader)
    except (ipc.IpcError, ConnectionError) as exc:
        log.error("the pipe to the agent broke: %s", exc)
        return None


def _send_state(agent: Agent, service: Service) -> None:
    stats = service.stats()
    stats.events_dropped = agent.dropped
    agent.send({"t": "stats", "s": ipc.stats_to_json(stats)})
    r = service.resolver
    agent.send({"t": "save", "data": dcache.snapshot(r.cache, r.tracker, time.time())})


async def _report(agent: Agent, service: Service) -> None:
    """Counters every second when they changed; the cache every 30 s when it changed."""
    last: Stats | None = None
    saved = (-1, -1)
    next_save = time.monotonic() + SAVE_EVERY_S
    while True:
        await asyncio.sleep(STATS_EVERY_S)
        stats = service.stats()
        stats.events_dropped = agent.dropped
        if stats != last:
            agent.send({"t": "stats", "s": ipc.stats_to_json(stats)})
            last = stats
        if time.monotonic() >= next_save:
            next_save = time.monotonic() + SAVE_EVERY_S
            r = service.resolver
            now = time.time()
            r.tracker.prune(now)
            r.recent.prune(now)
            mark = (stats.upstream, stats.set_writes)
            if mark != saved:
                saved = mark
                agent.report({"t": "save", "data": dcache.snapshot(r.cache, r.tracker, now)})


def _listen(addr: tuple[str, int]) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    try:
        udp = listen_socket(family, socket.SOCK_DGRAM, addr)
    except OSError as exc:
        raise OutguardError(f"cannot listen on {host}:{addr[1]} (UDP): {exc.strerror}") from exc
    try:
        return udp, listen_socket(family, socket.SOCK_STREAM, addr)
    except OSError as exc:
        udp.close()
        raise OutguardError(f"cannot listen on {host}:{addr[1]} (TCP): {exc.strerror}") from exc


def main(argv: list[str]) -> int:
    # systemd (and a terminal's ^C) signal the whole group: the agent stops us in order (its
    # `stop` lets us hand over our last counters and cache); without it, the pipe's end does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="outguard-dns: %(levelname)s %(message)s")
    sock = socket.socket(fileno=int(argv[1]))
    try:
        init = _read_init(sock)
        settings = ipc.settings_from_json(init["settings"])
        if init.get("netns"):
            privsep.enter_netns(str(init["netns"]))
        limit = privsep.raise_fd_limit()
        udp, tcp = _listen(settings.listen)
        _preload()
        if settings.uid is None or settings.gid is None:
            raise OutguardError(f"no uid for the resolver's user {settings.user!r}")
        privsep.drop_privileges(settings.uid, settings.gid)
    except (OSError, OutguardError, ipc.IpcError, KeyError, ValueError) as exc:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.sendall(ipc.frame({"t": "failed", "error": str(exc)}))
        return 1
    # a quarter of the descriptors at most for TCP clients: the rest for upstream sockets
    asyncio.run(_serve(sock, init, udp, tcp, max(16, min(MAX_TCP_CLIENTS, limit // 4))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
