"""Batched writes: the agent hands incidents over without waiting; a thread writes them.

Place in the data flow: aggregate → **BatchWriter** → Store. `put` copies the incident (the
aggregator keeps changing its own) and returns at once; updates of one incident between two
flushes coalesce into one row write. The thread flushes every `interval` seconds or when `batch`
incidents wait, applies retention every `prune_every` seconds, and `close()` flushes what is left:
nothing handed over before close is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from outguard.monitor.aggregate import Incident
from outguard.store.base import Retention, Store, StoreError

log = logging.getLogger(__name__)


class BatchWriter:
    def __init__(self, store: Store, *, interval: float = 0.2, batch: int = 500,
                 retention: Retention | None = None, prune_every: float = 60.0,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.store = store
        self.interval, self.batch = interval, batch
        self.retention, self.prune_every = retention, prune_every
        self.on_error = on_error
        self.written = 0
        self.errors = 0
        self._pending: dict[str, Incident] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._urgent = False
        self._flushes = 0
        self._last_prune = time.monotonic()
        self._thread = threading.Thread(target=self._main, name="outguard-store", daemon=True)
        self._thread.start()

    def put(self, incident: Incident) -> None:
        copy = dataclasses.replace(incident, classifications=list(incident.classifications))
        with self._cond:
            self._pending[copy.id] = copy
            if len(self._pending) >= self.batch:
                self._cond.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything put so far is written (or the timeout passed)."""
        with self._cond:
            target = self._flushes + (2 if self._pending else 1)
            self._urgent = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._flushes >= target or not self._thread.is_alive(),
                                timeout)

    def _take(self) -> list[Incident]:
        with self._cond:
            self._cond.wait_for(lambda: self._closing or self._urgent
                                or len(self._pending) >= self.batch, self.interval)
            self._urgent = False
            out = list(self._pending.values())
            self._pending.clear()
            return out

    def _main(self) -> None:
        while True:
            with self._cond:
                closing = self._closing
            batch = self._take()
            try:
                self.store.write(batch)
                self.written += len(batch)
                if self.retention is not None and \
                        time.monotonic() - self._last_prune >= self.prune_every:
                    self._last_prune = time.monotonic()
                    self.store.prune(datetime.now(UTC), self.retention)
            except StoreError as exc:
                # the monitor goes on; the failure is counted and reported, the batch is lost
                self.errors += 1
                log.error("%s", exc)
                if self.on_error is not None:
                    self.on_error(exc)
            with self._cond:
                self._flushes += 1
                self._cond.notify_all()
            if closing:
                return

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
