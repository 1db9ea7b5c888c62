"""Building and running the agent: for `outguard run`, and in-process for the lab and tests.

Place in the data flow: the top of the monitor. `run_agent` wires the real parts together —
NFLOG source (bound *before* the policy is applied, so no drop goes unseen), attributor,
classifier, store + batch writer, alert sinks from the policy's `alerts:`, metrics endpoint —
applies the policy, starts the DNS resolver when the policy has a `dns:` section (its answer
cache tells the agent which names resolved to a blocked destination, `Agent.names_of`; its
refused queries become incidents beside the packet drops, `dns.incidents`), and runs
`Agent.run` until `stop` is set. The metrics also watch the kernel's counters, the alert
budget, the resolver and the feeds (`monitor.metrics`); a store that fails is alerted and
counted, and the agent runs on (`monitor.health`).

`AgentHandle` runs the same on a thread of its own, for callers that are not asyncio (the lab):

    with AgentHandle(AgentOptions(policy=None, apply=False, netns="og-lab-server",
                                  state_dir=state, nflog_group=0)) as agent:
        ...trigger the JNDI lookup...
        incidents = agent.wait_for_incidents(1, timeout=1.0, query=Query(min_severity="critical"))
        agent.alerts            # every alert the sinks were given, as dicts
    # leaving the block stops the agent and flushes the store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from outguard.alerts.config import AlertSpec
from outguard.alerts.dispatch import Dispatcher
from outguard.alerts.sinks import Sink, build_sink
from outguard.errors import OutguardError
from outguard.monitor.agent import Agent, Attributor, PacketSource
from outguard.monitor.aggregate import Aggregator, Incident
from outguard.monitor.classify import load_classifier
from outguard.monitor.feedwatch import FeedWatch
from outguard.monitor.health import StoreTrouble, kernel_counters, open_store_late
from outguard.monitor.metrics import (
    Metrics,
    MetricsServer,
    feed_families,
    kernel_families,
    resolver_families,
    suppressed_families,
)
from outguard.policy.load import Policy
from outguard.store import Query
from outguard.store.base import Retention, Store
from outguard.store.writer import BatchWriter

if TYPE_CHECKING:
    from outguard.dns.server import DnsHandle

STORE_NAME = "events.db"
log = logging.getLogger("outguard.monitor")


@dataclass
class AgentOptions:
    policy: Path | None  # applied first when `apply`; its alerts/nflog_group are used
    state_dir: Path
    netns: str | None = None  # in-process use: bind NFLOG / apply inside this namespace
    apply: bool = True
    store: str | Path | None = None  # default: STATE_DIR/events.db
    signatures: Sequence[Path] = ()
    alerts: Sequence[AlertSpec] | None = None  # None: the policy's `alerts:`
    nflog_group: int | None = None  # None: the policy's options.nflog_group (default 0)
    metrics_listen: str | None = None
    window: timedelta = timedelta(minutes=10)
    realert: timedelta = timedelta(minutes=5)
    retention: Retention = field(default_factory=Retention)
    stdout: TextIO | None = None  # where `stdout:` sinks write (tests)
    dns: bool = True  # run the resolver when the policy has a `dns:` section
    feeds: bool = True  # update `@feed:` lists on their schedule and tag drops with the feed

    def store_location(self) -> str | Path:
        return self.store if self.store is not None else self.state_dir / STORE_NAME


class MemorySink:
    """Keeps every alert it is given (the handle's view of what was alerted). Internal: not a
    sink of the policy, so not in the alert metrics, and it does not widen what is alerted."""

    name = "memory"
    internal = True

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    async def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)

    async def close(self) -> None:
        return None


def default_source(group: int, netns: str | None) -> PacketSource:
    from outguard.kernel.nflog import NflogSource  # noqa: PLC0415 - needs netlink

    return NflogSource(group, netns=netns)


def default_attributor(netns: str | None) -> tuple[Attributor, Callable[[], None]]:
    """sock_diag (in `netns`) + /proc; and how to release it."""
    from outguard.kernel.sockdiag import SockDiag  # noqa: PLC0415 - needs netlink
    from outguard.monitor.attribute import Attributor as ProcAttributor  # noqa: PLC0415

    diag = SockDiag(netns=netns)
    try:
        return ProcAttributor(diag), diag.close
    except BaseException:
        diag.close()
        raise


def _load(opts: AgentOptions) -> Policy | None:
    """The policy, loaded once for everything the agent takes from it (alerts, NFLOG group,
    resolver, feeds)."""
    if opts.policy is None:
        return None
    from outguard.policy.load import load_policy  # noqa: PLC0415

    return load_policy(opts.policy, feed_dir=opts.state_dir / "feeds")


def _policy_settings(opts: AgentOptions, policy: Policy | None) -> tuple[list[AlertSpec], int]:
    alerts, group = list(opts.alerts or []), opts.nflog_group
    if policy is not None:
        doc = policy.doc
        if opts.alerts is None:
            alerts = list(doc.alerts)
        if group is None:
            group = doc.options.nflog_group
    return alerts, group if group is not None else 0


def _apply(opts: AgentOptions) -> None:
    from outguard.engine import apply_policy  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    assert opts.policy is not None
    state = StateDir(opts.state_dir)
    state.ensure()
    with Nft(opts.netns) as nft:
        apply_policy(opts.policy, state, nft)


async def _start_dns(opts: AgentOptions, loaded: Policy, aggregator: Aggregator,
                     writer: BatchWriter, dispatcher: Dispatcher,
                     cleanups: list[Callable[[], None]],
                     on_update: Callable[[Any], None] | None = None) -> DnsHandle | None:
    """The policy's resolver (None without a `dns:` section), its events also into the store."""
    from outguard.compile.lower import lower  # noqa: PLC0415
    from outguard.dns.events import JsonlEvents  # noqa: PLC0415
    from outguard.dns.incidents import IncidentEvents  # noqa: PLC0415
    from outguard.dns.server import serve_dns  # noqa: PLC0415

    if loaded.doc.dns is None:
        # no resolver to run; and lowering would resolve the policy's host names here, in this
        # process, which may not see the resolv.conf of the namespace it monitors
        return None
    ruleset = await asyncio.to_thread(lower, loaded)
    if ruleset.dns is None:
        return None
    jsonl = JsonlEvents(opts.state_dir)
    cleanups.append(jsonl.close)
    events = IncidentEvents(jsonl, aggregator, writer.put, dispatcher.publish,
                            on_update=on_update)
    return await serve_dns(ruleset.dns, ruleset, state_dir=opts.state_dir, netns=opts.netns,
                           events=events)


def _start_feeds(opts: AgentOptions, policy: Policy, dispatcher: Dispatcher,
                 stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> FeedWatch | None:
    """Scheduled feed updates and the feed index, when the policy refers to `@feed:` lists."""
    if opts.policy is None or not opts.feeds:
        return None
    watch = FeedWatch(opts.policy, opts.state_dir, opts.netns, dispatcher.publish)
    if not watch.index_from(policy):
        return None
    tasks.append(asyncio.create_task(watch.run(stop), name="outguard-feeds"))
    return watch


@dataclass
class Running:
    """What a started agent exposes to whoever started it."""

    agent: Agent
    store: Store
    writer: BatchWriter
    metrics: Metrics
    memory: MemorySink
    metrics_server: MetricsServer | None = None
    dns: DnsHandle | None = None  # the resolver, when the policy has a `dns:` section


async def run_agent(opts: AgentOptions, stop: asyncio.Event, *,
                    source: PacketSource | None = None, attributor: Attributor | None = None,
                    started: Callable[[Running], None] | None = None) -> Running:
    """Apply (if asked), then monitor until `stop` is set; flush and close everything."""
    if opts.apply and opts.policy is None:
        raise OutguardError("nothing to apply: give a policy, or do not apply")
    policy = _load(opts)
    specs, group = _policy_settings(opts, policy)
    classifier = load_classifier(opts.signatures)
    store, store_error = open_store_late(opts.store_location())
    memory = MemorySink()
    src = source if source is not None else default_source(group, opts.netns)
    metrics = Metrics(lambda: getattr(src, "stats", None))
    sinks: list[tuple[Sink, str]] = [(build_sink(s, opts.stdout), s.min_severity) for s in specs]
    dispatcher = Dispatcher([*sinks, (memory, "info")], observe=metrics.alert)
    trouble = StoreTrouble(metrics, asyncio.get_running_loop(), dispatcher.publish,
                           str(opts.store_location()))
    writer = BatchWriter(store, retention=opts.retention, on_error=trouble)
    server = None
    dns: DnsHandle | None = None
    cleanups: list[Callable[[], None]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        opener = getattr(src, "open", None)
        if callable(opener):
            opener()  # bound before the policy applies: the first drop is already seen
        if opts.apply:
            await asyncio.to_thread(_apply, opts)
        if source is None:  # the kernel's own count of what was blocked and logged
            read, release = kernel_counters(opts.netns)
            cleanups.append(release)
            metrics.watch(kernel_families(read))
        if opts.metrics_listen is not None:
            server = MetricsServer(metrics, opts.metrics_listen)
        if attributor is None:
            attributor, release = default_attributor(opts.netns)
            cleanups.append(release)
        # an alert only for what a sink of the policy sends (each severity has its own budget)
        aggregator = Aggregator(window=opts.window, realert=opts.realert,
                                min_alert=dispatcher.min_severity or "info")
        metrics.watch(suppressed_families(lambda: aggregator.suppressed))

        def dns_update(update: Any) -> None:
            if update.new:
                metrics.incidents.labels(update.incident.signature,
                                         update.incident.severity).inc()
        if opts.dns and opts.policy is not None:
            assert policy is not None
            dns = await _start_dns(opts, policy, aggregator, writer, dispatcher, cleanups,
                                   on_update=dns_update)
        if dns is not None:
            resolver = dns.resolver
            metrics.watch(resolver_families(lambda: resolver.stats))
        feeds = _start_feeds(opts, policy, dispatcher, stop, tasks) if policy is not None else None
        if feeds is not None:
            metrics.watch(feed_families(feeds.freshness))
        agent = Agent(src, attributor, classifier, writer,
                      dispatcher, metrics, aggregator=aggregator,
                      names_of=dns.resolver.names_of if dns is not None else lambda _dst: (),
                      feed_of=feeds.feed_of if feeds is not None else lambda _dst: None,
                      names_known=dns is not None, state_dir=opts.state_dir)
        if store_error is not None:
            log.error("%s; the agent runs on and tries again at every write", store_error)
            trouble(store_error, 0)
        running = Running(agent, store, writer, metrics, memory, server, dns)
        if started is not None:
            started(running)
        await agent.run(stop)
        return running
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if dns is not None:
            await dns.close()  # before its event sink and the store writer close
        for cleanup in cleanups:
            cleanup()
        closer = getattr(src, "close", None)
        if callable(closer):
            closer()
        writer.close()
        if server is not None:
            server.close()
        store.close()


class AgentHandle:
    """The agent on a background thread with its own event loop (see the module docstring)."""

    def __init__(self, opts: AgentOptions, *, source: PacketSource | None = None,
                 attributor: Attributor | None = None, start_timeout: float = 60.0) -> None:
        self.opts = opts
        self._source, self._attributor = source, attributor
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running: Future[Running] = Future()
        self._done: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name="outguard-agent", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_agent(self.opts, self._stop, source=self._source,
                            attributor=self._attributor, started=self._running.set_result)
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
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.running.memory.alerts)

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
