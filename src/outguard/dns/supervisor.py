"""The agent's side of the resolver: start the unprivileged resolver process, serve its requests,
keep it running.

Place in the data flow: `outguard run` (`service.runner`) and `outguard dns serve` call
`serve_dns`; it makes sure the resolver's user exists (`dns.user.ensure`), spawns `dns.process`
(which binds, then drops to that user: see `kernel.privsep` for why a process), and answers its
requests over `dns.ipc`:
- `write`: FQDN set entries, checked (a set of the policy, an address of its family, a bounded
  timeout), batched into libnftables transactions (`SetWriter`), answered when committed (or
  when no table of ours exists: `kernel.fqdnsets`), so an answer leaves once the kernel holds
  its addresses;
- `attr`: the process behind a client's socket (sock_diag + /proc, root's to read);
- `event`, `names`, `stats`, `save`: the DNS event log / incidents (`EventSink`), the names the
  monitor asks about (`names_of`), counters (`stats()`), the cache file.
Nothing the resolver sends is trusted: a malformed message ends that resolver process, and a new
one is started, as after a crash (backoff 1 s doubling to 30 s; every restart is logged and
counted). While none runs, DNS fails closed (nothing listens) and the kernel sets keep what they
hold.

    handle = await serve_dns(ruleset.dns, ruleset, state_dir=..., netns=...)
    handle.names_of("198.51.100.7"); handle.stats(); handle.reload(new_ruleset)
    await handle.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from outguard.dns import cache as dcache
from outguard.dns import ipc
from outguard.dns.blocklist import load_blocklists
from outguard.dns.cache import RecentNames, SetItem
from outguard.dns.client import Attributor, Client, sockdiag_attributor
from outguard.dns.events import EventSink, JsonlEvents, from_json
from outguard.dns.resolver import Stats
from outguard.dns.setwriter import SetWriter
from outguard.dns.user import ensure
from outguard.errors import KernelError, OutguardError
from outguard.kernel.fqdnsets import FqdnSets, JsonKernel, table_probe
from outguard.kernel.netns import NetnsThread
from outguard.kernel.privsep import Child, spawn_child
from outguard.ruleset.ir import DnsSettings, Ruleset
from outguard.ruleset.keys import SetName
from outguard.ruleset.names import NamePolicy

log = logging.getLogger("outguard.dns")
CACHE_FILE = dcache.FILE
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 30.0
MAX_PENDING_WRITES = 4096  # the resolver waits for each: more means it is broken
_RESTART_FIELDS = ("listen", "upstreams", "uid", "gid", "timeout")


def _fqdn_sets(ruleset: Ruleset) -> frozenset[str]:
    return frozenset(str(SetName.fqdn(r.fqdn_set, v)) for r in ruleset.rules() if r.fqdn_set
                     for v in (4, 6))


class DnsHandle:
    """A running resolver process and everything the agent does for it."""

    def __init__(self, settings: DnsSettings, ruleset: Ruleset, names: NamePolicy, *,
                 state_dir: Path, netns: str | None, writer: SetWriter, events: EventSink,
                 attribute: Callable[[str, str, int], Client]) -> None:
        self.settings, self.names = settings, names
        self.sets = _fqdn_sets(ruleset)
        self.old_sets: frozenset[str] = frozenset()
        self.state_dir, self.netns = state_dir, netns
        self.writer, self.events, self._attribute = writer, events, attribute
        self.recent = RecentNames()
        # what serve_dns acquired, this handle's `release` first (`close` unwinds it)
        self.resources = contextlib.AsyncExitStack()
        self._stats = Stats()
        self.restarts = 0
        self.rejected = 0  # malformed messages from the resolver process (each ended it)
        self.proc: Child | None = None
        self._out: asyncio.StreamWriter | None = None
        self._run: asyncio.Task[None] | None = None
        self._closing = False
        self._stopping = False  # a deliberate stop (close, or a restart for new settings)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attr_pool = ThreadPoolExecutor(1, thread_name_prefix="og-dns-attr")
        self._attr_busy = 0
        self._writes = 0  # set writes in progress
        cached = dcache.load(state_dir / CACHE_FILE, time.time())[0]
        for entry in cached.entries.values():  # a restart: what clients may still use
            self.recent.record(entry.resolved, entry.stored_at, extra=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.listen

    @property
    def pid(self) -> int | None:
        """The resolver process's pid (None while none runs)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def names_of(self, addr: str) -> tuple[str, ...]:
        """Names that resolved to `addr` lately (the monitor's "was this destination resolved?")."""
        return self.recent.names_of(addr, time.time())

    def stats(self) -> Stats:
        """The resolver's counters (README "DNS resolver counters"), as last reported (every
        second while they change), and the agent's count of restarts."""
        return dataclasses.replace(self._stats, restarts=self.restarts)

    def reload(self, ruleset: Ruleset, names: NamePolicy | None = None) -> None:
        """Switch to a new policy's names and `dns:` settings, atomically for the resolver (each
        query sees the old policy or the new one). Listen address, upstreams, user and timeout
        need a new resolver process: it is restarted. Blocklist errors raise before anything
        changes; `names`, when given, were built from `ruleset` already (a reload that must not
        fail once it switches builds them first)."""
        assert ruleset.dns is not None
        settings = ensure(ruleset.dns)
        if names is None:
            names = NamePolicy.of(ruleset, load_blocklists(settings.blocklists))
        restart = any(getattr(settings, f) != getattr(self.settings, f) for f in _RESTART_FIELDS)
        self.old_sets, self.sets = self.sets, _fqdn_sets(ruleset)
        self.settings, self.names = settings, names
        if restart:
            self._task(self._restart(), "restart")
        else:
            self._send({"t": "policy", "settings": ipc.settings_to_json(settings),
                        "names": names.to_json()})

    update = reload  # the name of the in-process resolver's method

    # --- the resolver process ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the resolver process; OutguardError with its reason when it cannot start."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with child:
                self.proc = spawn_child("outguard.dns.process", [str(child.fileno())],
                                        [child.fileno()])
            reader, out = await asyncio.open_connection(sock=parent, limit=ipc.MAX_FRAME)
        except BaseException:
            parent.close()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            raise
        self._out = out
        cache = dcache.read(self.state_dir / CACHE_FILE)
        self._send({"t": "init", "settings": ipc.settings_to_json(self.settings),
                    "names": self.names.to_json(), "cache": cache, "netns": self.netns})
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                first = await ipc.read_frame(reader)
        except (TimeoutError, ipc.IpcError, ConnectionError) as exc:
            await self._end(out)
            raise OutguardError(f"the DNS resolver did not start: {exc or 'no answer'}") from exc
        except BaseException:  # cancelled (the agent stops while it starts)
            self.proc.kill()
            out.close()
            raise
        if first is None or first["t"] != "ready":
            await self._end(out)
            why = first.get("error") if first else f"it exited ({self.proc.returncode})"
            raise OutguardError(f"the DNS resolver did not start: {why}")
        self._run = asyncio.get_running_loop().create_task(self._serve(reader, out))

    async def _serve(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        try:
            while (msg := await ipc.read_frame(reader)) is not None:
                self._handle(msg, out)
        except (ipc.IpcError, ConnectionError, OutguardError, ValueError, KeyError,
                TypeError) as exc:
            self.rejected += 1
            log.error("the DNS resolver process broke the protocol (%s): restarting it", exc)
            if self.proc is not None:
                self.proc.kill()  # it answers no client more: it may be hostile
        await self._end(out)
        if self._closing or self._stopping:
            return
        self.restarts += 1
        code = self.proc.returncode if self.proc is not None else None
        delay = 1.0 if time.monotonic() - started > 60 else min(2.0 ** min(self.restarts, 5),
                                                                  MAX_BACKOFF_S)
        log.error("the DNS resolver process ended (exit %s); starting a new one in %.0f s",
                  code, delay)
        self._task(self._respawn(delay), "respawn")

    async def _respawn(self, delay: float) -> None:
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self.start()
                return
            except OutguardError as exc:
                self.restarts += 1
                delay = min(delay * 2, MAX_BACKOFF_S)
                log.error("%s; trying again in %.0f s", exc, delay)

    async def _restart(self) -> None:
        await self._stop_process()
        if not self._closing:
            await self._respawn(0.0)

    def _handle(self, msg: dict[str, Any], out: asyncio.StreamWriter) -> None:
        kind = msg["t"]
        if kind == "write":
            if self._writes >= MAX_PENDING_WRITES:
                raise ipc.IpcError(f"more than {MAX_PENDING_WRITES} set writes at once")
            self._writes += 1
            self._task(self._write(msg["id"], ipc.set_items(msg["items"]), out), "write")
        elif kind == "attr":
            port = msg["port"]
            if not isinstance(port, int) or not isinstance(msg["addr"], str) \
                    or msg["proto"] not in ("tcp", "udp"):
                raise ipc.IpcError("attr: bad client")
            self._task(self._who(msg["id"], msg["proto"], msg["addr"], port, out), "attr")
        elif kind == "event":
            event = from_json(msg["e"])
            try:
                self.events.append(event)
            except (OSError, OutguardError) as exc:
                log.warning("cannot record a DNS event: %s", exc)
        elif kind == "names":
            self.recent.record(ipc.resolved_from_json(msg), float(msg["at"]), extra=True)
        elif kind == "stats":
            self._stats = ipc.stats_from_json(msg["s"])
        elif kind == "save":
            if not isinstance(msg["data"], dict):
                raise ipc.IpcError("save: no object")
            if self._stopping or self._closing:  # the last one: written before close returns
                self._save(msg["data"])
            else:
                self._task(asyncio.to_thread(self._save, msg["data"]), "save")
        elif kind != "bye":
            raise ipc.IpcError(f"unknown message {kind!r:.40}")

    async def _write(self, rid: Any, items: list[SetItem], out: asyncio.StreamWriter) -> None:
        error, held = None, False
        try:
            unknown = sorted({s for s, _a, _t in items} - self.sets - self.old_sets)
            if unknown:
                error = f"no such set in the policy: {', '.join(unknown)}"
            else:
                try:
                    held = await self.writer.write(items)
                except KernelError as exc:
                    error = str(exc)
        finally:
            self._writes -= 1
        self._reply(out, {"t": "done", "id": rid, "error": error, "held": held})

    async def _who(self, rid: Any, proto: str, addr: str, port: int,
                   out: asyncio.StreamWriter) -> None:
        who = Client()
        if self._attr_busy < 16:  # a flood of blocked queries: answer them, skip who asked
            self._attr_busy += 1
            try:
                who = await asyncio.get_running_loop().run_in_executor(
                    self._attr_pool, self._attribute, proto, addr, port)
            except (OSError, OutguardError, ValueError) as exc:
                log.debug("attribution of %s:%s failed: %s", addr, port, exc)
            finally:
                self._attr_busy -= 1
        self._reply(out, {"t": "who", "id": rid, "client": ipc.client_to_json(who)})

    def _save(self, data: dict[str, Any]) -> None:
        try:
            dcache.save(self.state_dir / CACHE_FILE, data)
        except OSError as exc:
            log.warning("cannot save the DNS cache: %s", exc)

    def _reply(self, out: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        if out is self._out and not out.is_closing():
            out.write(ipc.frame(msg))

    def _send(self, msg: dict[str, Any]) -> None:
        if self._out is not None and not self._out.is_closing():
            self._out.write(ipc.frame(msg))

    def _task(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"og-dns-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("DNS agent task %s failed: %s", task.get_name(), exc)

    async def _end(self, out: asyncio.StreamWriter) -> None:
        """Close the pipe and reap the process (killed if it does not leave in time)."""
        out.close()
        proc = self.proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def _stop_process(self) -> None:
        run, self._run = self._run, None
        self._stopping = True
        try:
            self._send({"t": "stop"})
            if run is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(run), STOP_TIMEOUT_S + 5)
                except TimeoutError:
                    if self.proc is not None:
                        self.proc.kill()
                    await run
        finally:
            self._stopping = False

    async def release(self) -> None:
        """Stop the resolver process (it sends its last counters and cache first; killed and
        reaped if it does not leave, or never said it was ready), the handle's tasks and its
        thread."""
        self._closing = True
        await self._stop_process()
        if self.proc is not None and self.proc.returncode is None:  # start() gave up on it
            if self.proc.poll() is None:
                self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._attr_pool.shutdown(wait=True)

    async def close(self) -> None:
        """Stop the resolver and release everything `serve_dns` acquired for it."""
        self._closing = True
        await self.resources.aclose()


def _quietly(close: Callable[[], Any]) -> Callable[[], None]:
    """A release step whose failure is logged, not raised: the steps after it still run, and
    the error that made serve_dns give up is the one its caller sees."""
    def run() -> None:
        try:
            close()
        except (OSError, KernelError) as exc:
            log.warning("releasing a part of the DNS resolver failed: %s", exc)
    return run


async def serve_dns(settings: DnsSettings, ruleset: Ruleset, *, state_dir: Path,
                    netns: str | None = None, kernel: JsonKernel | None = None,
                    events: EventSink | None = None,
                    attributor: Attributor | None = None) -> DnsHandle:
    """Start the resolver for `ruleset` (lowered with its `dns:` section); its handle.

    `kernel` defaults to libnftables in `netns`; `events` to JSON lines in `state_dir`;
    `attributor` to sock_diag + /proc in `netns`. Everything it acquires (the namespace
    thread, the nft context, the event log, the set writer, the resolver process) goes onto
    one exit stack: a failure or cancellation part-way releases all of it, in reverse order,
    and `DnsHandle.close` releases the same stack later."""
    if os.geteuid() != 0:
        raise OutguardError("the DNS resolver must be started as root (it binds its sockets,"
                            " then drops to dns.user)")
    settings = await asyncio.to_thread(ensure, settings)
    names = NamePolicy.of(ruleset, load_blocklists(settings.blocklists))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with contextlib.AsyncExitStack() as stack:
        thread = NetnsThread(netns)
        stack.callback(_quietly(thread.close))
        if kernel is None:
            from outguard.kernel.libnft import Nft  # noqa: PLC0415

            nft = Nft(netns)
            stack.callback(_quietly(nft.close))
            kernel = nft
        if events is None:
            jsonl = JsonlEvents(state_dir)
            stack.callback(_quietly(jsonl.close))
            events = jsonl
        attr = attributor if attributor is not None else thread.call(sockdiag_attributor, None)
        writer = SetWriter(FqdnSets(kernel, table_probe(kernel)))
        stack.callback(_quietly(writer.close))
        listen = settings.listen

        def attribute(proto: str, addr: str, port: int) -> Client:
            return thread.call(attr, proto, addr, port, *listen)

        handle = DnsHandle(settings, ruleset, names, state_dir=state_dir, netns=netns,
                           writer=writer, events=events, attribute=attribute)
        stack.push_async_callback(handle.release)  # first out: the process, tasks, threads
        await handle.start()
        handle.resources = stack.pop_all()
    return handle
