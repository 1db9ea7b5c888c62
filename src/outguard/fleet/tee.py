"""The store of a fleet agent: the local store, and the fleet outbox beside it.

Place in the data flow: where the monitor produces an incident — `store.writer.BatchWriter`
writes it (its own thread), `monitor.learn` records learned flows — **Teed** writes the local
store first, then queues the same rows in `fleet.outbox.Outbox` for `fleet.sender`. The local
store stays the agent's own record: the fleet is a copy (of a learned flow: as first learned;
the running count stays local). When the outbox cannot be written the
call raises `StoreError`, so the writer keeps the batch and tries again (a store write is an
upsert by id: writing it twice is harmless), counted and alerted like a failing store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from outguard.events import Incident, LearnedFlow
from outguard.fleet.outbox import Outbox, OutboxError
from outguard.store.base import Query, Retention, Store, StoreError, TopRow

log = logging.getLogger("outguard.fleet")


def flow_id(flow: LearnedFlow) -> str:
    """A learned flow's outbox id: its aggregation key's digest (the same flow, the same row)."""
    key = json.dumps(flow.key, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def incident_items(incidents: Sequence[Incident]) -> list[tuple[str, float, dict[str, Any]]]:
    return [(i.id, i.first_seen.timestamp(), i.to_json()) for i in incidents]


def flow_items(flows: Sequence[LearnedFlow]) -> list[tuple[str, float, dict[str, Any]]]:
    return [(flow_id(f), f.first_seen.timestamp(), f.to_json()) for f in flows]


class Teed:
    """A `Store` that also queues what is written in the outbox (reads go to `inner`)."""

    def __init__(self, inner: Store, outbox: Outbox) -> None:
        self.inner, self.outbox = inner, outbox
        self.dropped = 0  # items the outbox's bound dropped, as its puts said

    def _queue(self, kind: str, items: list[tuple[str, float, dict[str, Any]]]) -> None:
        if not items:
            return
        try:
            # an incident is handed over whole (the aggregator's running copy): the newest
            # replaces a waiting one; a learned flow comes as the delta of a flush (the store
            # adds its count up): the first stays, the server's row is the flow as first learned
            dropped = self.outbox.put(kind, items, replace=kind == "incidents")
        except OutboxError as exc:
            raise StoreError(str(exc)) from exc
        if dropped:
            if not self.dropped:
                log.error("fleet outbox full (%d waiting items): new %s are dropped and"
                          " counted until the server takes some", self.outbox.bound, kind)
            self.dropped += dropped

    def write(self, incidents: Sequence[Incident]) -> None:
        self.inner.write(incidents)
        self._queue("incidents", incident_items(incidents))

    def record_flows(self, flows: Sequence[LearnedFlow]) -> None:
        self.inner.record_flows(flows)
        self._queue("flows", flow_items(flows))

    def query(self, q: Query) -> list[Incident]:
        return self.inner.query(q)

    def top(self, by: Literal["process", "destination"], since: datetime | None,
            limit: int = 10) -> list[TopRow]:
        return self.inner.top(by, since, limit)

    def prune(self, now: datetime, retention: Retention) -> int:
        return self.inner.prune(now, retention)

    def flows(self, since: datetime | None = None) -> list[LearnedFlow]:
        return self.inner.flows(since)

    def dropped_flows(self) -> int:
        return self.inner.dropped_flows()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # what a store has beyond the Protocol (`flows_iter`, `rules`): the local store's
        return getattr(self.inner, name)
