"""Fan-out of alerts to the sinks, each isolated from the others and from the monitor.

Place in the data flow: agent → **Dispatcher.publish** → one bounded queue and one task per sink
→ `Sink.send`. `publish` never waits: when a sink falls behind (a hanging webhook) its queue fills
and alerts are dropped and counted — the oldest of the least severe, so that a flood of low
alerts never pushes out a critical one waiting for the same sink (a new alert less severe than
everything queued is the one dropped); the other sinks and the monitor loop go on. A sink that
raises is counted and logged; its next alert is tried as usual. A sink with `internal = True`
(the agent's in-memory view) is left out of the counts the metrics see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from outguard.alerts.sinks import AlertError, Sink
from outguard.events import SEVERITIES, severity_rank
from outguard.policy.alertconf import AlertSpec

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


# (sink name, outcome: sent | failed | dropped) — the metrics hook (internal sinks left out)
Observer = Callable[[str, str], None]


class _Lane:
    """One sink's bounded queue, dropping by severity when full (see the module doc)."""

    def __init__(self, sink: Sink, min_severity: str, size: int) -> None:
        self.sink = sink
        self.min_rank = severity_rank(min_severity)
        self.size = max(1, size)
        self.queue: deque[tuple[int, dict[str, Any]]] = deque()
        self.ready = asyncio.Event()
        self.busy = False  # an alert is being sent
        self.idle = asyncio.Event()
        self.idle.set()
        self.stats = SinkStats()
        self.task: asyncio.Task[None] | None = None

    def put(self, rank: int, alert: dict[str, Any]) -> bool:
        """Queue `alert`; False if one alert had to be dropped for it (or it was)."""
        dropped = False
        if len(self.queue) >= self.size:
            dropped = True
            lowest = min(range(len(self.queue)), key=lambda i: self.queue[i][0])
            if self.queue[lowest][0] > rank:
                return False  # everything waiting matters more than this one
            del self.queue[lowest]
        self.queue.append((rank, alert))
        self.idle.clear()
        self.ready.set()
        return not dropped

    async def get(self) -> dict[str, Any]:
        while not self.queue:
            self.ready.clear()
            await self.ready.wait()
        self.busy = True
        return self.queue.popleft()[1]

    def done(self) -> None:
        self.busy = False
        if not self.queue:
            self.idle.set()


class Dispatcher:
    def __init__(self, sinks: Sequence[tuple[Sink, str]], *, queue_size: int = 1000,
                 observe: Observer | None = None) -> None:
        """`sinks`: (sink, min_severity) pairs."""
        self._lanes = [_Lane(s, sev, queue_size) for s, sev in sinks]
        observer = observe or (lambda _name, _what: None)

        def counted(sink: Sink, outcome: str) -> None:
            if not getattr(sink, "internal", False):
                observer(sink.name, outcome)
        self._observe = counted

    @classmethod
    def from_specs(cls, specs: Sequence[AlertSpec], build: Callable[[AlertSpec], Sink], *,
                   observe: Observer | None = None) -> Dispatcher:
        return cls([(build(s), s.min_severity) for s in specs], observe=observe)

    @property
    def stats(self) -> dict[str, SinkStats]:
        return {lane.sink.name: lane.stats for lane in self._lanes}

    def start(self) -> None:
        for lane in self._lanes:
            if lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(
                    self._run(lane), name=f"alerts {lane.sink.name}")

    @property
    def min_severity(self) -> str | None:
        """The least severity any sink that is not internal sends (None: no such sink)."""
        ranks = [lane.min_rank for lane in self._lanes
                 if not getattr(lane.sink, "internal", False)]
        return SEVERITIES[min(ranks)] if ranks else None

    def publish(self, alert: dict[str, Any]) -> None:
        rank = severity_rank(alert.get("severity", "info"))
        for lane in self._lanes:
            if rank < lane.min_rank:
                continue
            if not lane.put(rank, alert):
                lane.stats.dropped += 1
                self._observe(lane.sink, "dropped")

    async def _run(self, lane: _Lane) -> None:
        while True:
            alert = await lane.get()
            try:
                await lane.sink.send(alert)
                lane.stats.sent += 1
                self._observe(lane.sink, "sent")
            except AlertError as exc:
                lane.stats.failed += 1
                self._observe(lane.sink, "failed")
                log.warning("alert not delivered: %s", exc)
            except Exception as exc:  # a bug in one sink must not silence the others
                lane.stats.failed += 1
                self._observe(lane.sink, "failed")
                log.exception("alert sink %s failed: %s", lane.sink.name, exc)
            finally:
                lane.done()

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (each sink within `timeout`), then stop the sinks."""
        async def drain(lane: _Lane) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.idle.wait(), timeout)
        await asyncio.gather(*(drain(lane) for lane in self._lanes if lane.task is not None))
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            with contextlib.suppress(Exception):
                await lane.sink.close()
