"""The agent's parts that a policy decides, as they run now, and their replacement by a reload.

Place in the data flow: `service.settings.AgentSettings` → **Live** → what the agent's loop
uses: the alert dispatcher and its sinks, the classifier, the DNS resolver, the feed schedule
and index, the NFLOG group, the egress proxy (`service.proxyrun`). `runner.run_agent` starts
them (`start`); `service.reload` replaces them in three steps:

- `stage`: build what the new settings need and the running parts cannot take over: new sinks
  (always: a sink holds its own connection), a socket bound to a new NFLOG group, a resolver
  on a new address. A failure drops what was staged; nothing in service changed. A resolver
  whose upstreams, timeout or user change on the *same* address cannot be started beside the
  running one: it is restarted here, last, and put back as it was if the new one fails.
- `switch`: one synchronous step of the event loop — no `await` — so that no packet and no
  query is handled with half of the old parts and half of the new: the agent's dispatcher,
  classifier, resolver rules (and its names) and feed index all change at once.
- `retire`: what was replaced is let go after the switch: old sinks deliver what they have
  queued, an old resolver's sockets close, the feed schedule restarts for the new feeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from outguard.alerts.dispatch import Dispatcher
from outguard.alerts.sinks import Sink, build_sink
from outguard.events import Attribution, BlockedPacket, Event
from outguard.feeds.lookup import FeedIndex
from outguard.monitor.agent import Agent, PacketSource
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.classify import Classifier
from outguard.monitor.metrics import Metrics
from outguard.monitor.proxy_incidents import ProxyRecords
from outguard.policy.loaded import Policy
from outguard.service.feedwatch import FeedWatch
from outguard.service.proxyrun import ProxyRun, step
from outguard.service.settings import AgentSettings
from outguard.service.switchsource import SwitchSource
from outguard.store.writer import BatchWriter

if TYPE_CHECKING:
    from outguard.dns.events import EventSink
    from outguard.dns.supervisor import DnsHandle
    from outguard.ruleset.ir import DnsSettings
    from outguard.service.options import AgentOptions

log = logging.getLogger("outguard.monitor")
DnsStep = Literal["none", "update", "new", "restart", "stop"]


def _server_part(settings: DnsSettings) -> DnsSettings:
    """The settings without what `Resolver.update` takes over in place: any other change of
    `dns:` (listen, upstreams, timeout, user) needs new sockets."""
    return dataclasses.replace(settings, min_ttl=0, grace=0, unlisted="refused", blocklists=())


@dataclass
class Staged:
    """New parts for a reload, built and not yet in service."""

    settings: AgentSettings
    dispatcher: Dispatcher
    dns_step: DnsStep = "none"
    dns: DnsHandle | None = None  # a resolver started for the new settings
    source: PacketSource | None = None  # bound to a new NFLOG group


class Live:
    def __init__(self, opts: AgentOptions, metrics: Metrics, memory: Sink,
                 aggregator: Aggregator, writer: BatchWriter, source: PacketSource,
                 load_feeds_policy: Callable[[], Any]) -> None:
        self.opts, self.metrics, self.memory = opts, metrics, memory
        self.aggregator, self.writer, self.source = aggregator, writer, source
        self.settings: AgentSettings | None = None
        self.dispatcher = Dispatcher([])
        self.dns: DnsHandle | None = None
        self.feeds = FeedWatch(load_feeds_policy, opts.state_dir, opts.netns, self.publish)
        self.agent: Agent | None = None
        self.proxy: ProxyRun | None = None
        self.proxy_records = ProxyRecords(self._proxy_event, self._classifier,
                                          self._proxy_client)
        metrics.watch(self.proxy_records.families())
        self._events: EventSink | None = None
        self._closers: list[Callable[[], None]] = []
        self._retiring: set[asyncio.Task[Any]] = set()

    def publish(self, alert: dict[str, Any]) -> None:
        """To the sinks in service now (DNS incidents, feed and reload alerts come this way)."""
        self.dispatcher.publish(alert)

    def _classifier(self) -> Classifier:
        assert self.settings is not None
        return self.settings.classifier

    def _proxy_client(self, pkt: BlockedPacket) -> Attribution | None:
        """A proxy client's process, by the agent's attributor (sock_diag and /proc as root);
        None with an attributor that answers later (a test's)."""
        if self.agent is None:
            return None
        found = self.agent.attributor.attribute(pkt)
        if isinstance(found, Attribution):
            return found
        close = getattr(found, "close", None)  # a coroutine nobody will await
        if callable(close):
            close()
        return None

    def _proxy_event(self, event: Event) -> None:
        """A refused proxy request: the blocked packet's path (aggregate, store, alert)."""
        if self.agent is not None:
            self.agent.record(self.aggregator.add(event))

    def _proxy(self, settings: AgentSettings) -> None:
        """The proxy for the new settings: started, told the new policy, restarted (a new
        `proxy:` section) or stopped (none any more)."""
        policy = settings.policy if self.opts.proxy else None
        wanted = policy is not None and policy.doc.proxy is not None
        running = self.proxy
        if running is not None:
            change = step(running.config, policy.doc.proxy if policy is not None else None)
            if change == "same" and policy is not None:
                running.send(policy)
                return
            self.proxy = None
            self._retire(self._replace_proxy(running, policy if wanted else None))
        elif wanted and policy is not None:
            self.proxy = ProxyRun(policy, self.opts.netns, self.proxy_records)
            self.proxy.start()

    async def _replace_proxy(self, old: ProxyRun, policy: Policy | None) -> None:
        await old.close()  # its sockets first: the new one binds the same ports
        if policy is not None and self.proxy is None:
            self.proxy = ProxyRun(policy, self.opts.netns, self.proxy_records)
            self.proxy.start()

    def names_of(self, destination: str) -> tuple[str, ...]:
        return self.dns.names_of(destination) if self.dns is not None else ()

    def _dispatcher(self, settings: AgentSettings) -> Dispatcher:
        sinks: list[tuple[Sink, str]] = [(build_sink(s, self.opts.stdout), s.min_severity)
                                         for s in settings.alerts]
        return Dispatcher([*sinks, (self.memory, "info")], observe=self.metrics.alert)

    async def start(self, settings: AgentSettings) -> None:
        """The first parts (the agent, made next, starts the dispatcher)."""
        self.dispatcher = self._dispatcher(settings)
        self._alert_floor()
        if settings.dns is not None:
            self.dns = await self._serve(settings)
        self.feeds.index = settings.index or FeedIndex([])
        if settings.feeds:
            self.feeds.start()
        self.settings = settings
        self._proxy(settings)

    def attach(self, agent: Agent) -> None:
        self.agent = agent
        agent.names_known = self.dns is not None
        agent.proxy_report = lambda: (self.proxy_records.report() if self.proxy is not None
                                      else None)

    async def _serve(self, settings: AgentSettings) -> DnsHandle:
        from outguard.dns.supervisor import serve_dns  # noqa: PLC0415

        assert settings.dns is not None and settings.dns.dns is not None
        # (the resolver process forgets which addresses the kernel sets held at every start
        # and policy change: the table may have been made anew, `dns.process`)
        return await serve_dns(settings.dns.dns, settings.dns, state_dir=self.opts.state_dir,
                               netns=self.opts.netns, events=self._dns_events())

    def _dns_incident(self, update: Any) -> None:
        if update.new:  # DNS incidents are counted beside the packets' (`Agent`)
            self.metrics.incidents.labels(update.incident.signature,
                                          update.incident.severity).inc()

    def _alert_floor(self) -> None:
        # an alert only for what a sink of the policy sends (each severity has its own budget)
        self.aggregator.min_alert = self.dispatcher.min_severity or "info"

    def _dns_events(self) -> EventSink:
        if self._events is None:
            from outguard.dns.events import JsonlEvents  # noqa: PLC0415
            from outguard.monitor.dns_incidents import IncidentEvents  # noqa: PLC0415

            jsonl = JsonlEvents(self.opts.state_dir)
            self._closers.append(jsonl.close)
            self._events = IncidentEvents(jsonl, self.aggregator, self.writer.put, self.publish,
                                          on_update=self._dns_incident)
        return self._events

    def _dns_step(self, settings: AgentSettings) -> DnsStep:
        new = settings.dns.dns if settings.dns is not None else None
        if new is None:
            return "stop" if self.dns is not None else "none"
        if self.dns is None:
            return "new"
        old = self.dns.settings
        if _server_part(old) == _server_part(new):
            return "update"
        return "restart" if old.listen == new.listen else "new"

    async def stage(self, settings: AgentSettings) -> Staged:
        """Build the parts `settings` needs beside the running ones (see the module docstring);
        raises, with nothing in service changed, if one cannot be built."""
        staged = Staged(settings, self._dispatcher(settings), self._dns_step(settings))
        try:
            if isinstance(self.source, SwitchSource) and settings.nflog_group != self.source.group:
                staged.source = await asyncio.to_thread(self.source.bind, settings.nflog_group)
            if staged.dns_step == "new":
                staged.dns = await self._serve(settings)
            elif staged.dns_step == "restart":
                staged.dns = await self._restart_dns(settings)
        except BaseException:
            await self.drop(staged)
            raise
        return staged

    async def _restart_dns(self, settings: AgentSettings) -> DnsHandle:
        assert self.dns is not None and self.settings is not None
        await self.dns.close()
        self.dns = None
        try:
            return await self._serve(settings)
        except BaseException:
            try:
                self.dns = await self._serve(self.settings)
            except Exception as exc:
                log.critical("the resolver could not be started again with the policy in"
                             " service either: DNS through outguard is down: %s", exc)
            raise

    async def drop(self, staged: Staged) -> None:
        """Let go of what a failed reload staged."""
        with contextlib.suppress(Exception):
            await staged.dispatcher.close()
        if staged.dns is not None:
            with contextlib.suppress(Exception):
                await staged.dns.close()
        if staged.source is not None:
            closer = getattr(staged.source, "close", None)
            if callable(closer):
                closer()

    def switch(self, staged: Staged) -> None:
        """Everything at once: no `await` in here (see the module docstring)."""
        agent, settings = self.agent, staged.settings
        assert agent is not None
        old_dispatcher, old_dns = self.dispatcher, None
        staged.dispatcher.start()
        self.dispatcher = agent.dispatcher = staged.dispatcher
        self._alert_floor()
        agent.classifier = settings.classifier
        if staged.dns_step == "update":
            assert self.dns is not None and settings.dns is not None
            assert settings.dns.dns is not None and settings.names is not None
            self.dns.reload(settings.dns, settings.names)
        elif staged.dns_step in ("new", "restart", "stop"):
            old_dns, self.dns = self.dns, staged.dns
        agent.names_known = self.dns is not None
        self.feeds.index = settings.index or FeedIndex([])
        if staged.source is not None:
            assert isinstance(self.source, SwitchSource)
            self.source.switch(staged.source, settings.nflog_group)
        self.settings = settings
        self._proxy(settings)
        self._retire(old_dispatcher.close())
        if old_dns is not None:
            self._retire(old_dns.close())
        if settings.feeds:
            self.feeds.start()
        else:
            self.feeds.halt()
        if staged.dns_step == "stop":
            log.warning("the policy has no dns: section any more: outguard's resolver stopped"
                        " (`outguard dns uninstall` if this host still asks it)")

    def _retire(self, closing: Any) -> None:
        task = asyncio.get_running_loop().create_task(closing)
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """After the agent stopped (its dispatcher closed): everything else."""
        await self.feeds.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.dns is not None:
            await self.dns.close()  # before its event sink and the store writer close
            self.dns = None
        if self.proxy is not None:
            await self.proxy.close()
            self.proxy = None
        for closer in self._closers:
            closer()
