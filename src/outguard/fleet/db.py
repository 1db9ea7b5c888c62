"""The API's hot path in PostgreSQL: rows in, the host's policy out, wake-ups across replicas.

Place in the data flow: `fleet.server` handlers call these with a connection from its async
pool. Incidents and flows go in as one `INSERT ... SELECT FROM jsonb_to_recordset($body) ON
CONFLICT ...` per batch (one round trip, exactly-once rows under at-least-once sending); their
day partitions are made on first need. `Notifier` holds one LISTEN connection per replica: any
replica's (or operator's) `NOTIFY og_fleet` wakes every long-poll waiting on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from outguard.fleet import schema
from outguard.fleet.wire import Item, ReportRequest

CHANNEL = "og_fleet"


class Notifier:
    """Wakes this replica's long-polls when anyone NOTIFYs the channel."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._event = asyncio.Event()
        self.listening = asyncio.Event()

    def event(self) -> asyncio.Event:
        """Take this BEFORE reading the state you will wait on: a change after the read sets it."""
        return self._event

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled; reconnect after a lost connection (and wake every waiter:
        whatever was notified meanwhile was missed)."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self.listening.set()
                    self._wake()
                    async for _note in conn.notifies():
                        self._wake()
            except psycopg.OperationalError:
                self.listening.clear()
                await asyncio.sleep(1.0)


def day_of(ts: float, today: date) -> date:
    """The partition day of a row: its own day, kept within a day of the server's (an agent
    with a wrong clock, or sending a week-old outbox, must not make partitions for other days)."""
    try:
        day = datetime.fromtimestamp(ts, UTC).date()
    except (OverflowError, OSError, ValueError):
        return today
    return min(max(day, today - timedelta(days=1)), today + timedelta(days=1))


async def _ensure_days(conn: psycopg.AsyncConnection, days: set[date], known: set[date]) -> None:
    """Make the partitions of `days` not in `known` (the days this app has seen made: they are
    not dropped while current, retention keeps at least three days)."""
    missing = days - known
    if not missing:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK,))
        for table in schema.PARTITIONED:
            for day in sorted(missing):
                await conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(sql.Identifier(schema.partition_name(table, day)), sql.Identifier(table),
                         sql.Literal(day), sql.Literal(day + timedelta(days=1))))
    known.update(missing)


# What a row sent again does. A learned flow is sent once, as first learned: a resend is a
# duplicate. An incident is sent again whenever it grows (its count, last_seen) under the same
# id: the newer form replaces the stored one, an older or equal one (a resend) changes nothing.
_ON_CONFLICT = {
    "flows": " ON CONFLICT DO NOTHING",
    "incidents": " ON CONFLICT (host_id, id, day) DO UPDATE SET ts = EXCLUDED.ts,"
                 " record = EXCLUDED.record, received = now()"
                 " WHERE incidents.record IS DISTINCT FROM EXCLUDED.record"
                 " AND coalesce(EXCLUDED.record->>'last_seen', '')"
                 " >= coalesce(incidents.record->>'last_seen', '')",
}


async def insert_items(conn: psycopg.AsyncConnection, table: str, host_id: int,
                       items: list[Item], raw: bytes, known: set[date]) -> int:
    """Store a batch of `table` rows ("incidents" or "flows") for `host_id`; how many were new
    or newer than the stored ones. `raw` is the request body `items` were validated from:
    PostgreSQL reads the rows out of it itself (one jsonb parameter, one pass of
    jsonb_to_recordset), ~3x faster than arrays of re-serialised records."""
    if not items:
        return 0
    today = datetime.now(UTC).date()
    # whole days since the epoch first: 1,000 rows of one batch are nearly always one day
    await _ensure_days(conn, {day_of(d * 86400.0, today) for d in {int(i.ts // 86400)
                                                                    for i in items}}, known)
    # the day as `day_of` computes it, so the partitions just made are the ones rows go to;
    # one row per id (the newest of a batch that names one twice: an update may not touch a
    # row twice in one statement)
    query = sql.SQL(
        "INSERT INTO {} (host_id, id, day, ts, record)"
        " SELECT DISTINCT ON (x.id) %(host)s, x.id, least(greatest((to_timestamp(x.ts)"
        " AT TIME ZONE 'UTC')::date, %(today)s::date - 1), %(today)s::date + 1),"
        " to_timestamp(x.ts), x.record FROM jsonb_to_recordset((%(body)s::jsonb)->{})"
        " AS x(id text, ts float8, record jsonb)"
        " ORDER BY x.id, x.record->>'last_seen' DESC NULLS LAST").format(
            sql.Identifier(table), sql.Literal(table))
    query = sql.Composed([query, sql.SQL(_ON_CONFLICT[table])])
    # one statement in autocommit: atomic by itself, and no BEGIN/COMMIT round trips
    cur = await conn.execute(query, {"host": host_id, "today": today, "body": raw.decode("utf-8")})
    return max(cur.rowcount, 0)


@dataclass(frozen=True)
class Assigned:
    version: int | None
    policy: str
    rollout_id: int | None
    lockdown_until: float | None  # None when none is in force


async def assigned(conn: psycopg.AsyncConnection, host_id: int, now: float) -> Assigned:
    cur = await conn.execute(
        "SELECT h.assigned_version, p.text, h.assigned_rollout, h.lockdown_until FROM hosts h"
        " LEFT JOIN policy_versions p ON p.version = h.assigned_version WHERE h.id = %s",
        (host_id,))
    row = await cur.fetchone()
    if row is None:
        return Assigned(None, "", None, None)
    until = row[3] if row[3] is not None and row[3] > now else None
    return Assigned(row[0], row[1] or "", row[2], until)


async def record_report(conn: psycopg.AsyncConnection, host_id: int, rep: ReportRequest) -> bool:
    """The report as the host's heartbeat and state; the rollout's part is `fleet.rollout`'s.
    Whether the host is in a rollout still going (its blocked rate then matters)."""
    took = rep.result in ("applied", "running") and rep.version is not None
    cur = await conn.execute(
        "UPDATE hosts SET last_seen = now(), agent_version = %s, mode = %s,"
        " reported_lockdown = %s, blocked_rate = %s, last_result = %s, last_detail = %s,"
        " applied_version = CASE WHEN %s THEN %s ELSE applied_version END WHERE id = %s"
        " RETURNING assigned_rollout",
        (rep.agent_version, rep.mode, rep.lockdown_until, rep.blocked_rate, rep.result,
         rep.detail, took, rep.version, host_id))
    row = await cur.fetchone()
    return row is not None and row[0] is not None


def notify(conn: psycopg.Connection) -> None:
    """Wake every replica's long-polls when the transaction commits."""
    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))




async def stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
