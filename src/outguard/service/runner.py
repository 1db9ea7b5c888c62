"""Building and running the agent: for `outguard run`, and in-process for the lab and tests.

Place in the data flow: the top of the monitor. `run_agent` wires the real parts together —
NFLOG source (bound *before* the policy is applied, so no drop goes unseen), attributor,
store + batch writer, metrics endpoint — applies the policy (unless told not to), and starts
what the policy decides (`service.live`): the classifier, the alert sinks from its `alerts:`,
the DNS resolver when it has a `dns:` section (its answer cache tells the agent which names
resolved to a blocked destination, `Agent.names_of`; its refused queries become incidents
beside the packet drops, `monitor.dns_incidents`), the feed schedule, and the watch that keeps
`for: {unit: …}` rules on their units' cgroups (`service.cgroupwatch`). Then it runs `Agent.run` until
`stop` is set, while `service.reload` keeps those parts on the applied policy (a new apply,
SIGHUP). The metrics watch the kernel's counters, the alert budget, the resolver and the feeds
(`monitor.metrics`); a failing store is alerted and counted, the agent runs on (`service.health`);
the dashboard is served with `--web` (`service.webserve`).

`AgentHandle` runs the same on a thread of its own, for callers that are not asyncio (the lab):

    with AgentHandle(AgentOptions(policy=None, apply=False, netns="og-lab-server",
                                  state_dir=state, nflog_group=0)) as agent:  # JNDI lookup, then:
        incidents = agent.wait_for_incidents(1, timeout=1.0, query=Query(min_severity="critical"))
    # leaving the block stops the agent and flushes the store
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outguard.errors import OutguardError
from outguard.events import Incident
from outguard.monitor.agent import Agent, Attributor, PacketSource
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.metrics import (
    Metrics,
    MetricsServer,
    feed_families,
    kernel_families,
    resolver_families,
    suppressed_families,
)
from outguard.policy.loaded import Policy
from outguard.service import fleetpart, learning, webserve
from outguard.service.cgroupwatch import CgroupWatch
from outguard.service.health import StoreTrouble, kernel_counters, open_store_late
from outguard.service.live import Live
from outguard.service.options import AgentOptions
from outguard.service.parts import MemorySink, default_attributor, default_source
from outguard.service.reload import Reloader, ReloadStats, current_policy, load_settings
from outguard.service.settings import AgentSettings, file_policy
from outguard.service.switchsource import SwitchSource
from outguard.store import Query, StoreError
from outguard.store.base import Store
from outguard.store.writer import BatchWriter

if TYPE_CHECKING:
    from outguard.dns.supervisor import DnsHandle
    from outguard.fleet.agent import FleetAgent
    from outguard.fleet.outbox import Outbox
    from outguard.web.app import WebServer

log = logging.getLogger("outguard.monitor")


def _apply(opts: AgentOptions) -> Any:
    from outguard.apply.run import apply_policy  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    assert opts.policy is not None
    state = StateDir(opts.state_dir)
    state.ensure()
    with Nft(opts.netns) as nft:
        return apply_policy(opts.policy, state, nft, text=opts.policy_text)


def _note_other_file(opts: AgentOptions, settings: AgentSettings) -> None:
    """`run --no-apply POLICY` while another policy is applied: say which one is served."""
    if opts.policy is None or settings.key is None or settings.policy is None:
        return
    try:
        same = hashlib.sha256(opts.policy.read_bytes()).hexdigest() == settings.policy.digest
    except OSError:
        same = False
    if not same:
        log.warning("%s is not what is applied: the agent serves what is applied, %s",
                    opts.policy, settings.origin)


@dataclass
class Running:
    """What a started agent exposes to whoever started it."""

    agent: Agent
    store: Store
    writer: BatchWriter
    metrics: Metrics
    memory: MemorySink
    live: Live
    reloader: Reloader
    metrics_server: MetricsServer | None = None
    web: WebServer | None = None  # the dashboard (`--web`)
    learn_books: dict[str, Any] | None = None  # when it learned: its books at the end
    fleet: FleetAgent | None = None  # with --fleet

    @property
    def dns(self) -> DnsHandle | None:  # the resolver in service (the policy has `dns:`)
        return self.live.dns


@dataclass
class _Parts:
    """The agent's parts that no policy decides, made before the policy is applied."""

    store: Store
    store_error: StoreError | None
    memory: MemorySink
    source: PacketSource
    metrics: Metrics
    trouble: StoreTrouble
    writer: BatchWriter
    aggregator: Aggregator
    live: Live
    server: MetricsServer | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    counters: Callable[[], dict[str, tuple[int, int]]] | None = None  # the kernel's, by name
    outbox: Outbox | None = None  # with --fleet: what waits for the fleet server


def _build(opts: AgentOptions, group: int, source: PacketSource | None) -> _Parts:
    store, store_error = open_store_late(opts.store_location())
    outbox = fleetpart.outbox_for(opts)
    store = fleetpart.tee(store, outbox)  # with --fleet: incidents and flows to the outbox too
    src: PacketSource = source if source is not None else SwitchSource(
        lambda g: default_source(g, opts.netns), group)
    metrics = Metrics(lambda: getattr(src, "stats", None))
    live: Live | None = None

    def publish(alert: dict[str, Any]) -> None:  # through the sinks in service at the time
        if live is not None:
            live.publish(alert)

    trouble = StoreTrouble(metrics, asyncio.get_running_loop(), publish,
                           str(opts.store_location()))
    writer = BatchWriter(store, retention=opts.retention, on_error=trouble)
    aggregator = Aggregator(window=opts.window, realert=opts.realert)
    metrics.watch(suppressed_families(lambda: aggregator.suppressed))
    memory = MemorySink()
    live = in_service = Live(opts, metrics, memory, aggregator, writer, src,
                             lambda: current_policy(opts)[0])
    metrics.watch(resolver_families(
        lambda: in_service.dns.stats() if in_service.dns is not None else None))
    metrics.watch(feed_families(in_service.feeds.freshness))
    return _Parts(store, store_error, memory, src, metrics, trouble, writer, aggregator, live,
                  outbox=outbox)


def _watch_kernel(opts: AgentOptions, parts: _Parts, source: PacketSource | None,
                  attributor: Attributor | None) -> Attributor:
    """The kernel's side: its counters (unless the packets come from a test's source), the
    metrics endpoint, and the attributor (sock_diag + /proc) unless one was given."""
    if source is None:  # the kernel's own count of what was blocked and logged
        read, release = kernel_counters(opts.netns)
        parts.cleanups.append(release)
        parts.counters = read
        parts.metrics.watch(kernel_families(read))
    if opts.metrics_listen is not None:
        parts.server = MetricsServer(parts.metrics, opts.metrics_listen)
    if attributor is None:
        attributor, release = default_attributor(opts.netns)
        parts.cleanups.append(release)
    return attributor


async def _close(parts: _Parts, tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await parts.live.close()
    for cleanup in parts.cleanups:
        cleanup()
    closer = getattr(parts.source, "close", None)
    if callable(closer):
        closer()
    parts.writer.close()
    if parts.server is not None:
        parts.server.close()
    parts.store.close()
    if parts.outbox is not None:
        parts.outbox.close()


async def _first_settings(opts: AgentOptions) -> tuple[AgentSettings | None, int, bool]:
    """What is known before anything is bound: the settings (None while a policy is still to
    be applied), the NFLOG group, whether to learn."""
    if opts.apply:
        assert opts.policy is not None
        given = await asyncio.to_thread(file_policy(opts.policy, opts.state_dir))
        return None, _group(opts, given), learning.learning(opts.learn, given)
    settings = await asyncio.to_thread(load_settings, opts)
    _note_other_file(opts, settings)
    return settings, settings.nflog_group, learning.learning(opts.learn, settings.policy)


async def run_agent(opts: AgentOptions, stop: asyncio.Event, *,
                    source: PacketSource | None = None, attributor: Attributor | None = None,
                    started: Callable[[Running], None] | None = None,
                    reload: asyncio.Event | None = None) -> Running:
    """Apply (if asked), then monitor until `stop` is set; flush and close everything. Setting
    `reload` is SIGHUP (see `service.reload`)."""
    if opts.apply and opts.policy is None:
        raise OutguardError("nothing to apply: give a policy, or do not apply")
    settings, group, learn_on = await _first_settings(opts)
    parts = _build(opts, group, source)
    live = parts.live
    tasks: list[asyncio.Task[None]] = []
    learn: learning.LearnParts | None = None
    try:
        opener = getattr(parts.source, "open", None)
        if callable(opener):
            opener()  # bound before the policy applies: the first drop is already seen
        if learn_on and source is None:  # the same for the first new flow
            learn = await asyncio.to_thread(learning.bind, group, opts.netns)
            parts.cleanups.append(learn.close)
        if opts.apply:
            await asyncio.to_thread(_apply, opts)
            settings = await asyncio.to_thread(load_settings, opts)
        assert settings is not None
        attributor = _watch_kernel(opts, parts, source, attributor)
        await live.start(settings)
        agent = Agent(parts.source, attributor, settings.classifier, parts.writer,
                      live.dispatcher, parts.metrics, aggregator=parts.aggregator,
                      names_of=live.names_of, feed_of=live.feeds.feed_of,
                      state_dir=opts.state_dir)
        live.attach(agent)
        if parts.store_error is not None:
            log.error("%s; the agent runs on and tries again at every write", parts.store_error)
            parts.trouble(parts.store_error, 0)
        reloader = Reloader(opts, live, parts.metrics, reload or asyncio.Event(), learning_on=learn
                            is not None, reapply=(lambda: _apply(opts)) if opts.apply else None)
        tasks += _watchers(opts, reloader, stop, kernel=source is None)
        web = webserve.start(opts, parts.counters, parts.metrics, live, stop, tasks)
        fleet = fleetpart.start(opts, parts.outbox, live, parts.metrics, agent, stop)
        tasks += [fleet.task] if fleet is not None else []
        running = Running(agent, parts.store, parts.writer, parts.metrics, parts.memory, live,
                          reloader, parts.server, web, fleet=fleet.agent if fleet else None)
        learn_task = None if learn is None else learning.task(
            learn, attributor, parts.store, stop, classifier=settings.classifier,
            names_of=live.names_of, counter=parts.counters,
            policy_now=lambda: live.settings.policy
            if live.settings is not None and live.opts.learn_decide else None)
        tasks += [learn_task] if learn_task is not None else []
        if started is not None:
            started(running)
        await agent.run(stop)
        if learn is not None and learn_task is not None:
            await learn_task  # its last flush, before the store closes
            running.learn_books = learning.books(learn)
        await fleetpart.finish(fleet)  # after the last flushes: what waits goes now, or later
        return running
    finally:
        await _close(parts, tasks)


def _watchers(opts: AgentOptions, reloader: Reloader, stop: asyncio.Event, *,
              kernel: bool) -> list[asyncio.Task[None]]:
    """The reloader, and with the kernel's source the cgroup watch (unit and cgroup rules
    follow their cgroups)."""
    tasks = [asyncio.create_task(reloader.run(stop), name="outguard-reload")]
    if kernel:
        tasks.append(asyncio.create_task(CgroupWatch(opts.state_dir, opts.netns).run(stop),
                                         name="outguard-cgroups"))
    return tasks


def _group(opts: AgentOptions, policy: Policy) -> int:
    return policy.doc.options.nflog_group if opts.nflog_group is None else opts.nflog_group


class AgentHandle:
    """The agent on a background thread with its own event loop (see the module docstring)."""

    def __init__(self, opts: AgentOptions, *, source: PacketSource | None = None,
                 attributor: Attributor | None = None, start_timeout: float = 60.0) -> None:
        self.opts = opts
        self._source, self._attributor = source, attributor
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._reload: asyncio.Event | None = None
        self._running: Future[Running] = Future()
        self._done: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name="outguard-agent", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop, self._reload = asyncio.Event(), asyncio.Event()
            await run_agent(self.opts, self._stop, source=self._source,
                            attributor=self._attributor, started=self._running.set_result,
                            reload=self._reload)
        try:
            asyncio.run(main())
            self._done.set_result(None)
        except BaseException as exc:
            if not self._running.done():
                self._running.set_exception(exc)
            self._done.set_exception(exc)

    def start(self) -> AgentHandle:
        self._thread.start()
        self._running.result(self._start_timeout)  # re-raises a failed start
        return self

    @property
    def running(self) -> Running:
        return self._running.result(0)

    @property
    def alerts(self) -> list[dict[str, Any]]:  # every alert the sinks were given, as dicts
        return list(self.running.memory.alerts)

    @property
    def reloads(self) -> ReloadStats:
        return self.running.reloader.stats

    def reload(self) -> None:
        """What SIGHUP does to `outguard run`."""
        assert self._loop is not None and self._reload is not None
        self._loop.call_soon_threadsafe(self._reload.set)

    def wait_for_reloads(self, count: int, *, timeout: float = 10.0) -> ReloadStats:
        """Poll until `count` reloads ended (succeeded or failed), or the timeout passes."""
        deadline = time.monotonic() + timeout
        stats = self.reloads
        while stats.ok + stats.failed < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return stats

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the agent's loop (e.g. `MemorySource.push`)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def incidents(self, query: Query | None = None) -> list[Incident]:
        """What the store holds now (everything handed to it so far is written first)."""
        running = self.running
        running.writer.flush()
        return running.store.query(query or Query())

    def wait_for_incidents(self, count: int = 1, *, timeout: float = 1.0,
                           query: Query | None = None) -> list[Incident]:
        """Poll the store until at least `count` incidents match (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.incidents(query)
            if len(got) >= count or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and not self._done.done():
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._done.done():
            self._done.result()  # re-raises what ended the agent

    def __enter__(self) -> AgentHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
