"""The store's interface: what the agent writes and what `events`, `top` and the lab read.

Implementations: `sqlite.SQLiteStore` (default), PostgreSQL later (fleet). Every method is
synchronous and may block on I/O: the agent calls `write` only from `writer.BatchWriter`'s
thread, readers call from wherever they are. Times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from outguard.errors import OutguardError
from outguard.monitor.aggregate import Incident


class StoreError(OutguardError):
    """The store cannot be opened, migrated, read or written."""


@dataclass(frozen=True)
class Query:
    since: datetime | None = None  # incidents last seen at or after this
    rule: str | None = None  # exact rule: "default", "deny:tor"
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

    def close(self) -> None: ...
