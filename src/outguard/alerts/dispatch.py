"""Fan-out of alerts to the sinks, each isolated from the others and from the monitor.

Place in the data flow: agent → **Dispatcher.publish** → one bounded queue and one task per sink
→ `Sink.send`. `publish` never waits: when a sink falls behind (a hanging webhook) its queue fills
and its oldest alerts are dropped and counted; the other sinks and the monitor loop go on. A sink
that raises is counted and logged; its next alert is tried as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from outguard.alerts.config import AlertSpec, severity_rank
from outguard.alerts.sinks import AlertError, Sink

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


# (sink name, outcome: sent | failed | dropped) — the metrics hook
Observer = Callable[[str, str], None]


class _Lane:
    def __init__(self, sink: Sink, min_severity: str, size: int) -> None:
        self.sink = sink
        self.min_rank = severity_rank(min_severity)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.stats = SinkStats()
        self.task: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(self, sinks: Sequence[tuple[Sink, str]], *, queue_size: int = 1000,
                 observe: Observer | None = None) -> None:
        """`sinks`: (sink, min_severity) pairs."""
        self._lanes = [_Lane(s, sev, queue_size) for s, sev in sinks]
        self._observe = observe or (lambda _name, _what: None)

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

    def publish(self, alert: dict[str, Any]) -> None:
        rank = severity_rank(alert.get("severity", "info"))
        for lane in self._lanes:
            if rank < lane.min_rank:
                continue
            if lane.queue.full():
                lane.queue.get_nowait()
                lane.queue.task_done()
                lane.stats.dropped += 1
                self._observe(lane.sink.name, "dropped")
            lane.queue.put_nowait(alert)

    async def _run(self, lane: _Lane) -> None:
        while True:
            alert = await lane.queue.get()
            try:
                await lane.sink.send(alert)
                lane.stats.sent += 1
                self._observe(lane.sink.name, "sent")
            except AlertError as exc:
                lane.stats.failed += 1
                self._observe(lane.sink.name, "failed")
                log.warning("alert not delivered: %s", exc)
            except Exception as exc:  # a bug in one sink must not silence the others
                lane.stats.failed += 1
                self._observe(lane.sink.name, "failed")
                log.exception("alert sink %s failed: %s", lane.sink.name, exc)
            finally:
                lane.queue.task_done()

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (each sink within `timeout`), then stop the sinks."""
        async def drain(lane: _Lane) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.queue.join(), timeout)
        await asyncio.gather(*(drain(lane) for lane in self._lanes if lane.task is not None))
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            with contextlib.suppress(Exception):
                await lane.sink.close()
