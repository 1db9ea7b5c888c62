"""The learned-flows table of the SQLite store: rows, the merge by key, the size bound.

Place in the data flow: learner (monitor) → `SQLiteStore.record_flows` → **here** → the
`flows` table → `SQLiteStore.flows` → `outguard flows`, suggest, simulate. The merge happens in
SQL (one upsert per flow, `executemany`), so recording a batch never reads it back into Python:
count adds, first_seen is the earliest, last_seen the latest, names the sorted union (at most
`MAX_NAMES`), decision/cmdline/uid/cgroup come from the latest sighting, and a signature once set
is never cleared by a later flow without one. The table holds at most `max_flows` rows: beyond
that the least recently seen go first, and each one dropped is counted in `flow_books`.

Called with the store's lock held and inside its transaction; these functions neither lock nor
commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from outguard.events import LearnedFlow

MAX_NAMES = 64  # names kept per flow: a shared CDN address must not grow one row without end
DROPPED = "dropped"  # the flow_books entry: rows removed by the size bound, all time

MIGRATION = """
    CREATE TABLE flows (
        k TEXT PRIMARY KEY,
        exe TEXT, cmdline TEXT NOT NULL, user TEXT, uid INTEGER, unit TEXT, cgroup TEXT,
        container TEXT, dst TEXT NOT NULL, port INTEGER, proto TEXT NOT NULL,
        names TEXT NOT NULL, count INTEGER NOT NULL, first_seen REAL NOT NULL,
        last_seen REAL NOT NULL, decision TEXT NOT NULL, signature TEXT, severity TEXT
    );
    CREATE INDEX flows_last_seen ON flows(last_seen);
    CREATE TABLE flow_books (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# `journey.aggregate.collect`'s service of a flow: its unit, else its executable. The summary's
# GROUP BY must spell it exactly so for SQLite to walk `flows_service` instead of sorting.
SERVICE = ("CASE WHEN unit IS NOT NULL AND unit != '' THEN 'unit:' || unit"
           " ELSE 'exe:' || COALESCE(NULLIF(exe, ''), '?') END")
# Migration 5: indexes in the order `flowsummary` groups by, each holding every column its query
# reads, so a million rows are summarised by walking an index (no sort, no table lookups):
# suggest's (service, destination, protocol, severity), simulate's (destination, port,
# protocol, uid, cgroup).
INDEXES = f"""
    CREATE INDEX flows_service ON flows({SERVICE}, dst, proto, severity, port, exe, uid, user,
        unit, cgroup, names, count, first_seen, last_seen);
    CREATE INDEX flows_question ON flows(dst, port, proto, uid, cgroup, names, last_seen);
"""

_COLUMNS = ("k", "exe", "cmdline", "user", "uid", "unit", "cgroup", "container", "dst", "port",
            "proto", "names", "count", "first_seen", "last_seen", "decision", "signature",
            "severity")
_LATER = "excluded.last_seen >= flows.last_seen"  # this sighting is the latest one
_UPSERT = (
    f"INSERT INTO flows ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    " ON CONFLICT(k) DO UPDATE SET"
    " count = flows.count + excluded.count,"
    " first_seen = MIN(flows.first_seen, excluded.first_seen),"
    " last_seen = MAX(flows.last_seen, excluded.last_seen),"
    " names = (SELECT json_group_array(value) FROM (SELECT value FROM json_each(flows.names)"
    "   UNION SELECT value FROM json_each(excluded.names) ORDER BY value"
    f"   LIMIT {MAX_NAMES})),"
    f" cmdline = CASE WHEN {_LATER} THEN excluded.cmdline ELSE flows.cmdline END,"
    f" uid = CASE WHEN {_LATER} THEN COALESCE(excluded.uid, flows.uid) ELSE flows.uid END,"
    f" cgroup = CASE WHEN {_LATER} THEN COALESCE(excluded.cgroup, flows.cgroup)"
    "   ELSE flows.cgroup END,"
    f" decision = CASE WHEN {_LATER} THEN excluded.decision ELSE flows.decision END,"
    " severity = CASE WHEN excluded.signature IS NOT NULL THEN excluded.severity"
    "   ELSE flows.severity END,"
    " signature = COALESCE(excluded.signature, flows.signature)"
)


def _key(flow: LearnedFlow) -> str:
    # One text column: SQLite's UNIQUE treats NULLs as distinct, and most key parts may be None.
    return json.dumps(list(flow.key), separators=(",", ":"))


def _row(flow: LearnedFlow) -> tuple[Any, ...]:
    names = sorted({n.lower().rstrip(".") for n in flow.names if n})[:MAX_NAMES]
    return (_key(flow), flow.exe, json.dumps(list(flow.cmdline)), flow.user, flow.uid, flow.unit,
            flow.cgroup, flow.container, flow.dst, flow.port, flow.proto, json.dumps(names),
            flow.count, flow.first_seen.timestamp(), flow.last_seen.timestamp(), flow.decision,
            flow.signature, flow.severity if flow.signature is not None else None)


def record(db: sqlite3.Connection, flows: Sequence[LearnedFlow], max_flows: int) -> int:
    """Merge `flows` into the table, then hold it to `max_flows` rows; how many were dropped."""
    db.executemany(_UPSERT, [_row(f) for f in flows])
    excess = int(db.execute("SELECT COUNT(*) FROM flows").fetchone()[0]) - max_flows
    if excess <= 0:
        return 0
    # k breaks ties between equal last_seen, so which rows go is deterministic
    db.execute("DELETE FROM flows WHERE k IN (SELECT k FROM flows ORDER BY last_seen, k"
               " LIMIT ?)", [excess])
    db.execute("INSERT INTO flow_books (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
               " SET value = value + excluded.value", [DROPPED, excess])
    return excess


def dropped(db: sqlite3.Connection) -> int:
    """Rows the size bound has removed, over the file's life."""
    row = db.execute("SELECT value FROM flow_books WHERE name = ?", [DROPPED]).fetchone()
    return int(row[0]) if row is not None else 0


def read(db: sqlite3.Connection, since: datetime | None) -> list[LearnedFlow]:
    """The flows last seen at or after `since`, most recently seen first (ties by key).
    ValueError/TypeError/KeyError for a row no outguard wrote."""
    where, args = ("", []) if since is None else (" WHERE last_seen >= ?", [since.timestamp()])
    rows = db.execute(f"SELECT * FROM flows{where} ORDER BY last_seen DESC, k", args).fetchall()
    return [flow_of_row(r) for r in rows]


def flow_of_row(r: sqlite3.Row) -> LearnedFlow:
    """A row as the flow it records."""
    return LearnedFlow(
        exe=r["exe"], cmdline=tuple(str(a) for a in json.loads(r["cmdline"])), user=r["user"],
        uid=r["uid"], unit=r["unit"], cgroup=r["cgroup"], container=r["container"],
        dst=str(r["dst"]), port=r["port"], proto=str(r["proto"]),
        names=tuple(str(n) for n in json.loads(r["names"])), count=int(r["count"]),
        first_seen=datetime.fromtimestamp(r["first_seen"], UTC),
        last_seen=datetime.fromtimestamp(r["last_seen"], UTC), decision=str(r["decision"]),
        signature=r["signature"], severity=r["severity"])
