"""What operators do, on the database directly: enrol tokens, revoke, push, lockdown, look.

Place in the data flow: `cli.fleet_cmd` → these → PostgreSQL (operators never go through the
API: they act on the database, with its own roles and audit). A change hosts must see (a new
assignment, a lockdown) NOTIFYs in its transaction, so every replica's long-polls return. A
policy is validated before it is stored: one that does not load never becomes a version.
Incidents as hosts send them are snapshots of an incident that grows (its count), so `events`
and `top` read the latest row of each (host, incident id).
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from outguard.errors import OutguardError
from outguard.fleet import rollout, schema
from outguard.fleet.auth import new_secret, sha256
from outguard.fleet.db import notify
from outguard.fleet.wire import valid_host
from outguard.policy.load import load_text


class OpsError(OutguardError):
    """An operator command that cannot be done as asked (nothing was changed)."""


def connect(dsn: str) -> psycopg.Connection:
    """A connection to a database whose fleet schema this code can use."""
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise OpsError(f"cannot connect to the fleet database: {exc}".strip()) from None
    try:
        schema.check_version(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def enroll_token(conn: psycopg.Connection, host: str | None, ttl: timedelta) -> str:
    """A one-time enrol token (for `host` only, when given); only its hash is stored."""
    if host is not None and not valid_host(host):
        raise OpsError(f"--host: {host!r} is not a host name ([A-Za-z0-9.-], 1-253)")
    token = new_secret()
    conn.execute("INSERT INTO enroll_tokens (sha256, host, expires) VALUES (%s, %s, now() + %s)",
                 (sha256(token), host, ttl))
    return token


def revoke(conn: psycopg.Connection, name: str) -> None:
    row = conn.execute("UPDATE hosts SET revoked = now() WHERE name = %s RETURNING id",
                       (name,)).fetchone()
    if row is None:
        raise OpsError(f"no host {name!r}")


def select_hosts(conn: psycopg.Connection, glob: str) -> list[tuple[int, str]]:
    """The enrolled, not revoked hosts whose name matches the shell pattern `glob`."""
    rows = conn.execute("SELECT id, name FROM hosts WHERE revoked IS NULL ORDER BY name")
    return [(int(i), str(n)) for i, n in rows.fetchall() if fnmatch.fnmatchcase(n, glob)]


@dataclass(frozen=True)
class Pushed:
    version: int
    rollout_id: int
    waves: list[list[str]]


def store_version(conn: psycopg.Connection, path: Path) -> int:
    """Validate the policy at `path` as the hosts will load it (the YAML alone: list files
    beside it are not sent) and store it as a new immutable version."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsError(f"cannot read {path}: {exc}") from None
    load_text(text, str(path))  # PolicyError (every problem, file:line:col) when it does not load
    row = conn.execute("INSERT INTO policy_versions (text, sha256, source) VALUES (%s, %s, %s)"
                       " RETURNING version",
                       (text, hashlib.sha256(text.encode()).hexdigest(), str(path))).fetchone()
    assert row is not None
    return int(row[0])


def push(conn: psycopg.Connection, path: Path, glob: str, canary: int, waves: list[float],
         max_rate_jump: float, soak_seconds: float) -> Pushed:
    targets = select_hosts(conn, glob)
    if not targets:
        raise OpsError(f"--to {glob!r} matches no enrolled host")
    plan = rollout.plan_waves([n for _i, n in targets], canary, waves)
    ids = dict((n, i) for i, n in targets)
    version = store_version(conn, path)
    rid = rollout.create(conn, version, glob, [[ids[n] for n in w] for w in plan],
                         max_rate_jump, soak_seconds)
    return Pushed(version, rid, plan)


def lockdown(conn: psycopg.Connection, glob: str, seconds: float | None) -> list[str]:
    """Lockdown (for `seconds`; None lifts it) on the matching hosts; their long-polls wake."""
    targets = select_hosts(conn, glob)
    if not targets:
        raise OpsError(f"--to {glob!r} matches no enrolled host")
    with conn.transaction():
        conn.execute(
            "UPDATE hosts SET lockdown_until = CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE extract(epoch FROM now()) + %s END WHERE id = ANY(%s)",
            (seconds, seconds, [i for i, _n in targets]))
        notify(conn)
    return [n for _i, n in targets]


def hosts(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT name, last_seen, applied_version, assigned_version, mode, agent_version,"
        " reported_lockdown, lockdown_until, last_result, revoked IS NOT NULL, blocked_rate"
        " FROM hosts ORDER BY name").fetchall()
    now = datetime.now(UTC).timestamp()
    return [{"host": r[0], "last_seen": r[1].isoformat() if r[1] else None,
             "applied_version": r[2], "assigned_version": r[3], "mode": r[4],
             "agent_version": r[5],
             "lockdown_until": max((x for x in (r[6], r[7]) if x and x > now), default=None),
             "last_result": r[8], "revoked": r[9], "blocked_rate": r[10]} for r in rows]


# `day` too, so that PostgreSQL reads only the partitions of the window (a row's day is its
# time's, or a day from when it arrived: a day's margin covers it)
_LATEST = (
    "SELECT DISTINCT ON (i.host_id, i.record->>'id') h.name AS host, i.ts, i.record"
    " FROM incidents i JOIN hosts h ON h.id = i.host_id WHERE i.ts >= %(since)s"
    " AND i.day >= (%(since)s::timestamptz AT TIME ZONE 'UTC')::date - 1"
    " AND (%(hosts)s::bigint[] IS NULL OR i.host_id = ANY(%(hosts)s))"
    " ORDER BY i.host_id, i.record->>'id', i.ts DESC, i.received DESC")
_RANK = ("CASE record->>'severity' WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3"
         " WHEN 'critical' THEN 4 ELSE 0 END")


def _host_ids(conn: psycopg.Connection, glob: str | None) -> list[int] | None:
    return None if glob is None else [i for i, _n in select_hosts(conn, glob)]


def events(conn: psycopg.Connection, since: datetime, *, host: str | None = None,
           rule: str | None = None, process: str | None = None, severity: str | None = None,
           limit: int = 1000) -> list[dict[str, Any]]:
    """The latest form of each incident seen since `since`, most recent first, filtered as
    `outguard events` filters (a bare rule name matches it in any section)."""
    rank = ["info", "low", "medium", "high", "critical"].index(severity) if severity else 0
    rows = conn.execute(
        f"SELECT host, ts, record FROM ({_LATEST}) AS latest WHERE {_RANK} >= %(rank)s"
        " AND (%(rule)s::text IS NULL OR record->>'rule' = %(rule)s"
        "      OR split_part(record->>'rule', ':', 2) = %(rule)s)"
        " AND (%(proc)s::text IS NULL OR strpos(record->'process'->>'exe', %(proc)s) > 0)"
        " ORDER BY ts DESC LIMIT %(limit)s",
        {"since": since, "hosts": _host_ids(conn, host), "rank": rank, "rule": rule,
         "proc": process, "limit": limit}).fetchall()
    return [{"host": r[0], "ts": r[1].isoformat(), **r[2]} for r in rows]


def top(conn: psycopg.Connection, by: str, since: datetime, *, host: str | None = None,
        limit: int = 10) -> list[dict[str, Any]]:
    """The processes, destinations or hosts with the most blocked packets since `since`."""
    key = {"process": "record->'process'->>'exe'", "host": "host",
           "destination": "record->>'dst' || coalesce(':' || (record->>'dport'), '')"}[by]
    rows = conn.execute(
        f"SELECT {key} AS k, count(*), sum((record->>'count')::bigint)::bigint, max(ts),"
        f" max({_RANK}) FROM ({_LATEST}) AS latest GROUP BY k"
        " ORDER BY 3 DESC NULLS LAST, 4 DESC LIMIT %(limit)s",
        {"since": since, "hosts": _host_ids(conn, host), "limit": limit}).fetchall()
    sev = ["info", "low", "medium", "high", "critical"]
    return [{by: r[0], "incidents": r[1], "packets": r[2], "last_seen": r[3].isoformat(),
             "worst": sev[r[4]]} for r in rows]


def prune(conn: psycopg.Connection, keep_days: int) -> list[str]:
    """Retention: drop the day partitions older than `keep_days` (at least 3: the API files
    rows up to a day either side of today)."""
    if keep_days < 3:
        raise OpsError("--keep-days: at least 3")
    return schema.drop_before(conn, datetime.now(UTC).date() - timedelta(days=keep_days))


# One page of `events` for the fleet view, newest first, by keyset (ts, host id, incident id):
# the page after a cursor bounds `day` from above too (a day's margin), so that PostgreSQL
# reads only the partitions between the window's start and the cursor, however deep the page.
# Agents send an incident under its first_seen (stable), so its latest form keeps its ts.
_PAGE = (
    "SELECT DISTINCT ON (i.host_id, i.record->>'id') i.host_id, h.name AS host,"
    " i.record->>'id' AS iid, i.ts, i.record"
    " FROM incidents i JOIN hosts h ON h.id = i.host_id WHERE i.ts >= %(since)s"
    " AND i.day >= (%(since)s::timestamptz AT TIME ZONE 'UTC')::date - 1"
    " AND (%(until)s::timestamptz IS NULL OR (i.ts <= %(until)s"
    "      AND i.day <= (%(until)s::timestamptz AT TIME ZONE 'UTC')::date + 1))"
    " AND (%(hosts)s::bigint[] IS NULL OR i.host_id = ANY(%(hosts)s))"
    " ORDER BY i.host_id, i.record->>'id', i.ts DESC, i.received DESC")


@dataclass(frozen=True)
class PageCursor:
    """Where a page of `events_page` ended: the last row's (ts, host id, incident id)."""

    ts: datetime
    host_id: int
    iid: str

    def text(self) -> str:
        # ISO, not a float: microseconds exact, so no row is skipped or shown twice
        return f"{self.ts.isoformat()}~{self.host_id}~{self.iid}"

    @classmethod
    def parse(cls, text: str) -> PageCursor:
        try:
            ts, host_id, iid = text.split("~", 2)
            when = datetime.fromisoformat(ts)
            if when.tzinfo is None:
                raise ValueError(ts)
            return cls(when, int(host_id), iid)
        except ValueError:
            raise OpsError(f"before: {text!r} is not a page cursor") from None


PAGE_SQL = (
    f"SELECT host_id, host, iid, ts, record FROM ({_PAGE}) AS latest"
    f" WHERE {_RANK} >= %(rank)s"
    " AND (%(rule)s::text IS NULL OR record->>'rule' = %(rule)s"
    "      OR split_part(record->>'rule', ':', 2) = %(rule)s)"
    " AND (%(until)s::timestamptz IS NULL"
    "      OR (ts, host_id, iid) < (%(until)s, %(bhost)s::bigint, %(bid)s::text))"
    " ORDER BY ts DESC, host_id DESC, iid DESC LIMIT %(limit)s")


def page_params(since: datetime, before: PageCursor | None, host_ids: list[int] | None,
                rule: str | None, severity: str | None, limit: int) -> dict[str, Any]:
    """PAGE_SQL's parameters (tests EXPLAIN it with them: partitions pruned)."""
    rank = ["info", "low", "medium", "high", "critical"].index(severity) if severity else 0
    return {"since": since, "hosts": host_ids, "rank": rank, "rule": rule,
            "until": before.ts if before else None, "bhost": before.host_id if before else None,
            "bid": before.iid if before else None, "limit": limit}


def events_page(conn: psycopg.Connection, since: datetime, *, before: PageCursor | None = None,
                host: str | None = None, rule: str | None = None,
                severity: str | None = None, limit: int = 50
                ) -> tuple[list[dict[str, Any]], PageCursor | None]:
    """`events`'s rows (host glob, rule, at least `severity`), `limit` at a time after
    `before`; the cursor of the next page, or None at the end."""
    rows = conn.execute(PAGE_SQL, page_params(
        since, before, _host_ids(conn, host), rule, severity, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = PageCursor(rows[-1][3], int(rows[-1][0]), str(rows[-1][2])) if more else None
    return [{"host": r[1], "ts": r[3].isoformat(), **r[4]} for r in rows], cursor


def rollouts(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rollouts, newest first: state, wave (1-based, of how many), why halted."""
    rows = conn.execute(
        "SELECT r.id, r.version, r.selector, r.state, r.current_wave, r.waves, r.reason,"
        " r.created, (SELECT count(*) FROM rollout_hosts rh WHERE rh.rollout_id = r.id),"
        " (SELECT count(*) FROM rollout_hosts rh WHERE rh.rollout_id = r.id"
        "  AND rh.result = 'applied') FROM rollouts r ORDER BY r.id DESC LIMIT %s",
        (limit,)).fetchall()
    return [{"id": r[0], "version": r[1], "selector": r[2], "state": r[3], "wave": r[4] + 1,
             "waves": r[5], "reason": r[6], "created": r[7].isoformat(timespec="seconds"),
             "hosts": r[8], "applied": r[9]} for r in rows]
