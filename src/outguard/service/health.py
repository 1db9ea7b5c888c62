"""The agent's view of its own health: the kernel's counters for the metrics, and a store that
fails — as metrics, an alert, and an agent that runs on.

Place in the data flow: beside the monitor. `service.runner` reads the table's named counters
through `kernel_counters` (blocked, logged: the metrics of what the monitor could not see),
opens the store with `open_store_late` (a store that cannot be opened yet is tried again at
each write), and hands the batch writer a `StoreTrouble` for its failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outguard.monitor.metrics import Metrics
from outguard.store import StoreError, open_store
from outguard.store.base import LateStore, Store


def kernel_counters(netns: str | None) -> tuple[Callable[[], dict[str, tuple[int, int]]],
                                                 Callable[[], None]]:
    """A reader of `inet outguard`'s named counters in `netns` (for the metrics, at scrape
    time, from any thread); and how to release it."""
    from outguard.kernel.counters import open_socket, read_counters  # noqa: PLC0415
    from outguard.kernel.netns import NetnsThread  # noqa: PLC0415

    with contextlib.closing(NetnsThread(netns)) as thread:
        sock = thread.call(open_socket)  # a socket stays in the namespace it was made in
    lock = threading.Lock()

    def read() -> dict[str, tuple[int, int]]:
        with lock:
            return read_counters(sock=sock)
    return read, sock.close


class StoreTrouble:
    """The store's failures as metrics and as an alert (at most one per `every` seconds):
    called on the writer's thread, alerts on the agent's loop."""

    def __init__(self, metrics: Metrics, loop: asyncio.AbstractEventLoop,
                 publish: Callable[[dict[str, Any]], None], where: str, every: float = 300) -> None:
        self.metrics, self.loop, self.publish, self.where = metrics, loop, publish, where
        self.every, self._last, self._lost = every, -1e9, 0

    def __call__(self, exc: Exception, lost: int) -> None:
        self.metrics.store_errors.inc()
        if lost > self._lost:
            self.metrics.store_lost.inc(lost - self._lost)
            self._lost = lost
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        alert = {"type": "outguard.store", "severity": "high", "signature": "store-failed",
                 "title": f"incidents are not being stored: {exc}",
                 "details": {"store": self.where, "lost": lost}}
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self.publish, alert)


def open_store_late(where: str | Path) -> tuple[Store, StoreError | None]:
    """The store; one that cannot be opened now is tried again at each write (the agent runs
    on: its resolver and alerts matter more than the store)."""
    try:
        return open_store(where), None
    except StoreError as exc:
        return LateStore(lambda: open_store(where), exc), exc
