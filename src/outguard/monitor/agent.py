"""The agent loop: blocked packets in, incidents stored and alerted, until told to stop.

Place in the data flow (one asyncio loop):

    source (NFLOG) ─► attribute ─► classify ─► aggregate ─► BatchWriter ─► Store
                                                   └─────► Dispatcher ─► sinks
                                                   └─────► Metrics

`Agent.handle` is the whole per-packet path and never awaits: attribution must run while the
blocked socket still exists (a dropped TCP connect sits in SYN_SENT only until it gives up),
the store is written by `BatchWriter`'s thread, and alerts go to the dispatcher's queues. The
source and the attributor are Protocols: `kernel.nflog.NflogSource` and
`monitor.attribute.Attributor` in production, `MemorySource` and plain functions in tests.
`Agent.run` returns when the source ends or `stop` is set, and then flushes the store and
delivers queued alerts. While it runs it writes its counts for `outguard status`
(`monitor.agentstate`). `service.runner` builds an agent for `outguard run` and for the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from outguard import agentstate
from outguard.alerts.dispatch import Dispatcher
from outguard.alerts.format import alert_json
from outguard.events import Attribution, BlockedPacket, Event
from outguard.monitor.aggregate import Aggregator, Update
from outguard.monitor.classify import Classifier
from outguard.monitor.metrics import Metrics
from outguard.store.writer import BatchWriter

log = logging.getLogger("outguard.monitor")


class PacketSource(Protocol):
    def __aiter__(self) -> AsyncIterator[list[BlockedPacket]]: ...


class Attributor(Protocol):
    def attribute(self, pkt: BlockedPacket) -> Attribution | Awaitable[Attribution]: ...


@dataclass
class SourceStats:
    received: int = 0
    lost: int = 0
    enobufs: int = 0
    seq_gaps: int = 0


class MemorySource:
    """A source fed from Python (tests, replays): `push` batches, `end` to finish."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[BlockedPacket] | None] = asyncio.Queue()
        self.stats = SourceStats()

    def push(self, *packets: BlockedPacket) -> None:
        self.stats.received += len(packets)
        self._queue.put_nowait(list(packets))

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[list[BlockedPacket]]:
        while (batch := await self._queue.get()) is not None:
            yield batch


class NoAttribution:
    """The attributor when none is available: every packet is unattributed, with a reason."""

    def __init__(self, reason: str = "attribution disabled") -> None:
        self.reason = reason

    def attribute(self, pkt: BlockedPacket) -> Attribution:
        return Attribution(uid=pkt.uid, failure=self.reason, failure_kind="disabled")


class Agent:
    def __init__(self, source: PacketSource, attributor: Attributor, classifier: Classifier,
                 writer: BatchWriter, dispatcher: Dispatcher, metrics: Metrics, *,
                 aggregator: Aggregator | None = None,
                 names_of: Callable[[str], tuple[str, ...]] = lambda _dst: (),
                 feed_of: Callable[[str], str | None] = lambda _dst: None,
                 names_known: bool = False,
                 host: str | None = None,
                 on_update: Callable[[Update], None] | None = None,
                 state_dir: Path | None = None, report_every: float = 5.0) -> None:
        self.source, self.attributor, self.classifier = source, attributor, classifier
        self.writer, self.dispatcher, self.metrics = writer, dispatcher, metrics
        self.aggregator = aggregator or Aggregator()
        self.names_of, self.host, self.on_update = names_of, host, on_update
        self.feed_of, self.names_known = feed_of, names_known
        self.state_dir, self.report_every = state_dir, report_every
        self.packets = 0
        self.running = asyncio.Event()
        self._report = agentstate.AgentReport(pid=os.getpid(), started=time.time())
        # the egress proxy's part of the report, while one runs (`service.live`)
        self.proxy_report: Callable[[], dict[str, Any] | None] = lambda: None
        self._report_failed = False

    async def _attribute(self, pkt: BlockedPacket) -> Attribution:
        got = self.attributor.attribute(pkt)
        if inspect.isawaitable(got):
            got = await got
        assert isinstance(got, Attribution)
        return got

    async def handle(self, batch: list[BlockedPacket]) -> None:
        # attribute the whole batch first: the sockets behind it are disappearing
        attributions = [await self._attribute(pkt) for pkt in batch]
        for pkt, att in zip(batch, attributions, strict=True):
            self.packets += 1
            self.metrics.logged_drops.labels(pkt.rule).inc()
            if att.pid is None:  # the kind, never the text: that holds addresses and ports
                self.metrics.attribution_failures.labels(att.failure_kind or "other").inc()
            event = Event(pkt, att, names=self.names_of(pkt.dst), names_known=self.names_known,
                          feed=self.feed_of(pkt.dst))
            event.classifications = self.classifier.classify(event)
            self.record(self.aggregator.add(event))

    def record(self, update: Update) -> None:
        """An aggregated update to the metrics, the store and (if due) the alerts."""
        inc = update.incident
        if update.new:
            self.metrics.incidents.labels(inc.signature, inc.severity).inc()
        self.writer.put(inc)
        if update.alert:
            self.dispatcher.publish(alert_json(inc, repeat=not update.new, host=self.host))
        if self.on_update is not None:
            self.on_update(update)

    def report(self) -> agentstate.AgentReport:
        """What `outguard status` shows of this agent, now."""
        r = self._report
        stats = getattr(self.source, "stats", None)
        r.received = int(getattr(stats, "received", self.packets))
        r.nflog_lost, r.enobufs = int(getattr(stats, "lost", 0)), int(getattr(stats, "enobufs", 0))
        r.incidents = int(sum(s.value for m in self.metrics.incidents.collect()
                              for s in m.samples if s.name.endswith("_total")))
        r.alerts_suppressed = dict(self.aggregator.suppressed)
        sinks = self.dispatcher.stats
        r.alerts_dropped = {n: st.dropped for n, st in sinks.items() if st.dropped}
        r.alerts_failed = {n: st.failed for n, st in sinks.items() if st.failed}
        r.store_errors, r.store_lost = self.writer.errors, self.writer.lost
        r.store_pending = self.writer.pending
        r.proxy = self.proxy_report()
        return r

    async def write_report(self, *, stopped: bool = False) -> None:
        if self.state_dir is None:
            return
        report = self.report()
        report.stopped = stopped
        try:
            await asyncio.to_thread(agentstate.write, self.state_dir, report)
        except OSError as exc:
            if not self._report_failed:  # once: the store's own errors say the rest
                self._report_failed = True
                log.error("cannot write %s: %s", self.state_dir / agentstate.FILE, exc)

    async def _consume(self) -> None:
        async for batch in self.source:
            await self.handle(batch)

    async def _housekeeping(self) -> None:
        last_expire = time.monotonic()
        while True:
            await self.write_report()
            await asyncio.sleep(self.report_every)
            if time.monotonic() - last_expire >= 30:
                last_expire = time.monotonic()
                self.aggregator.expire(datetime.now(UTC) - timedelta(seconds=1))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until the source ends or `stop` is set; then flush the store and the alerts."""
        stop = stop or asyncio.Event()
        self.dispatcher.start()
        consume = asyncio.create_task(self._consume(), name="outguard monitor")
        stopper = asyncio.create_task(stop.wait(), name="outguard stop")
        chores = asyncio.create_task(self._housekeeping(), name="outguard housekeeping")
        self.running.set()
        try:
            await asyncio.wait({consume, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (consume, stopper, chores):
                task.cancel()
            for task in (stopper, chores):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            failure: BaseException | None = None
            try:
                await consume
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # re-raised once the store and alerts are flushed
                failure = exc
            await asyncio.to_thread(self.writer.flush)
            await self.dispatcher.close()
            await self.write_report(stopped=True)
            if failure is not None:
                raise failure

