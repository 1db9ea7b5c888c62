"""Batched writes: the agent hands incidents over without waiting; a thread writes them.

Place in the data flow: aggregate → **BatchWriter** → Store. `put` copies the incident (the
aggregator keeps changing its own) and returns at once; updates of one incident between two
flushes coalesce into one row write. The thread flushes every `interval` seconds or when `batch`
incidents wait, applies retention every `prune_every` seconds, and `close()` flushes what is left:
nothing handed over before close is lost while the store works.

When a write fails (disk full, a read-only or damaged state directory) the batch is kept and
tried again with the next one; only beyond `max_pending` waiting incidents are the oldest
dropped, and every one dropped is counted (`lost`) and reported through `on_error`, never lost
in silence.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from outguard.events import Incident
from outguard.store.base import Retention, Store, StoreError

log = logging.getLogger(__name__)

# (the failure, incident updates dropped by it so far in all) — the agent's alert and metrics hook
OnError = Callable[[StoreError, int], None]


class BatchWriter:
    def __init__(self, store: Store, *, interval: float = 0.2, batch: int = 500,
                 retention: Retention | None = None, prune_every: float = 60.0,
                 max_pending: int = 20_000, on_error: OnError | None = None) -> None:
        self.store = store
        self.interval, self.batch = interval, batch
        self.retention, self.prune_every = retention, prune_every
        self.max_pending = max(batch, max_pending)
        self.on_error = on_error
        self.written = 0
        self.errors = 0  # failed writes
        self.lost = 0  # incident updates dropped after failed writes
        self._pending: dict[str, Incident] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._urgent = False
        self._flushes = 0
        self._last_prune = time.monotonic()
        self._last_logged = -1e9
        self._thread = threading.Thread(target=self._main, name="outguard-store", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def put(self, incident: Incident) -> None:
        copy = dataclasses.replace(incident, classifications=list(incident.classifications))
        with self._cond:
            self._pending[copy.id] = copy
            if len(self._pending) >= self.batch:
                self._cond.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything put so far was tried (or the timeout passed)."""
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

    def _keep(self, batch: list[Incident]) -> int:
        """Put a failed batch back (a newer copy of an incident wins); drop the oldest beyond
        `max_pending`. How many were dropped."""
        with self._cond:
            newer = self._pending
            self._pending = {i.id: i for i in batch if i.id not in newer}
            self._pending.update(newer)
            dropped = 0
            while len(self._pending) > self.max_pending:
                del self._pending[next(iter(self._pending))]
                dropped += 1
            return dropped

    def _failed(self, exc: StoreError, batch: list[Incident]) -> None:
        self.errors += 1
        self.lost += self._keep(batch)
        now = time.monotonic()
        if now - self._last_logged >= 30:  # a broken disk must not become a flood of logs
            self._last_logged = now
            log.error("%s (%d incident update(s) waiting, %d lost so far)", exc, self.pending,
                      self.lost)
        if self.on_error is not None:
            self.on_error(exc, self.lost)

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
                self._failed(exc, batch)
            with self._cond:
                self._flushes += 1
                self._cond.notify_all()
            if closing:
                if self._pending:  # what could not be written at the end is lost: say so
                    self.lost += len(self._pending)
                    log.error("event store: %d incident update(s) could not be written",
                              len(self._pending))
                return

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
