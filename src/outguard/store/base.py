"""The store's interface: what the agent writes and what `events`, `top` and the lab read.

Implementations: `sqlite.SQLiteStore` (default), PostgreSQL later (fleet). Every method is
synchronous and may block on I/O: the agent calls `write` only from `writer.BatchWriter`'s
thread, readers call from wherever they are. Times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from outguard.errors import OutguardError
from outguard.events import Incident, LearnedFlow

# Learned flows a store keeps (`record_flows`): beyond it the least recently seen go first. A
# learned row is ~300 bytes, so the default bounds the table near 60 MB.
MAX_FLOWS = 200_000


class StoreError(OutguardError):
    """The store cannot be opened, migrated, read or written."""


@dataclass(frozen=True)
class Query:
    since: datetime | None = None  # incidents last seen at or after this
    rule: str | None = None  # "default", "deny:tor"; a bare name ("tor") in any section
    process: str | None = None  # substring of the process (exe path)
    signature: str | None = None
    min_severity: str | None = None
    limit: int = 1000


@dataclass(frozen=True)
class TopRow:
    key: str  # a process, or a destination "dst:port"
    incidents: int
    packets: int
    last_seen: datetime
    severity: str  # the worst among them


@dataclass(frozen=True)
class Retention:
    max_age: timedelta | None = timedelta(days=30)
    max_bytes: int | None = 256 << 20


class Store(Protocol):
    def write(self, incidents: Sequence[Incident]) -> None:
        """Insert or update (by `id`) in one transaction."""

    def query(self, q: Query) -> list[Incident]:
        """Matching incidents, the most recently seen first."""

    def top(self, by: Literal["process", "destination"], since: datetime | None,
            limit: int = 10) -> list[TopRow]:
        """The processes or destinations with the most blocked packets."""

    def prune(self, now: datetime, retention: Retention) -> int:
        """Apply retention by age, then by size; return how many incidents were removed."""

    def record_flows(self, flows: Sequence[LearnedFlow]) -> None:
        """Merge learned flows by `LearnedFlow.key` in one transaction: count adds, first_seen
        is the earliest, last_seen the latest, names the union, decision/signature/severity the
        latest (a signature once set is never cleared). The store keeps a bounded number of
        flows; beyond it the least recently seen are dropped and counted (`dropped_flows`)."""

    def flows(self, since: datetime | None = None) -> list[LearnedFlow]:
        """The learned flows last seen at or after `since`, most recently seen first (ties in
        a fixed order): the same table gives the same list."""

    def dropped_flows(self) -> int:
        """How many learned flows the size bound has removed, over the store's life."""

    def close(self) -> None: ...


class LateStore:
    """A store that could not be opened (a read-only or damaged state directory): the agent
    runs on, every write tries to open it again (and fails as a counted, alerted StoreError
    until it can), reads see nothing meanwhile."""

    def __init__(self, opener: Callable[[], Store], error: StoreError) -> None:
        self._opener, self.error = opener, error
        self._inner: Store | None = None

    def _store(self) -> Store:
        if self._inner is None:
            try:
                self._inner = self._opener()
            except StoreError as exc:
                self.error = exc
                raise
        return self._inner

    def write(self, incidents: Sequence[Incident]) -> None:
        if incidents:
            self._store().write(incidents)

    def query(self, q: Query) -> list[Incident]:
        return self._inner.query(q) if self._inner is not None else []

    def top(self, by: Literal["process", "destination"], since: datetime | None,
            limit: int = 10) -> list[TopRow]:
        return self._inner.top(by, since, limit) if self._inner is not None else []

    def prune(self, now: datetime, retention: Retention) -> int:
        return self._inner.prune(now, retention) if self._inner is not None else 0

    def record_flows(self, flows: Sequence[LearnedFlow]) -> None:
        if flows:
            self._store().record_flows(flows)

    def flows(self, since: datetime | None = None) -> list[LearnedFlow]:
        return self._inner.flows(since) if self._inner is not None else []

    def dropped_flows(self) -> int:
        return self._inner.dropped_flows() if self._inner is not None else 0

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
