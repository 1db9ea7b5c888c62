"""Keyset pages over the incidents table, for the dashboard (`outguard.web`).

Place in the data flow: store → **pages** → web. `SQLiteStore.incidents_page` runs `page_sql`;
a page is never an OFFSET (a deep OFFSET walks every row before it): it starts below a cursor,
the (last_seen, rowid) of the last row shown, and walks the `incidents_last_seen` index
(rowid is in every index entry, so the order needs no sort). A row keeps its rowid when the
agent updates it (`INSERT … ON CONFLICT DO UPDATE`), so a cursor stays valid while incidents
arrive. There is no total count either: COUNT(*) over a million rows costs more than a page.
A filter that no index holds (process, severity) walks a bounded number of rows per page.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from outguard.events import SEVERITIES

PAGE_MAX = 500
# A filtered page walks at most this many incidents (~30 ms): a filter that matches few or
# none gives a short page and a cursor to walk on from, never a scan of the whole table
SCAN = 20_000


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last row's last_seen (Unix seconds) and rowid."""

    last_seen: float
    rowid: int

    def text(self) -> str:
        return f"{self.last_seen!r}_{self.rowid}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The inverse of `text`; ValueError for anything else."""
        seen, sep, rowid = text.partition("_")
        if not sep:
            raise ValueError(f"{text!r} is not a page cursor")
        return cls(float(seen), int(rowid))


@dataclass(frozen=True)
class PageQuery:
    before: Cursor | None = None  # rows after this one in the order (older)
    min_severity: str | None = None
    rule: str | None = None  # exact decision key, or a bare name in any section
    process: str | None = None  # substring of the process (exe path)
    signature: str | None = None
    limit: int = 50
    scan: int = SCAN  # with row filters: index entries walked at most (see `page_sql`)


def _rank_at_least(severity: str) -> tuple[str, list[Any]]:
    wanted = list(SEVERITIES[SEVERITIES.index(severity):])
    return f"severity IN ({', '.join('?' * len(wanted))})", wanted


def _seek(q: PageQuery) -> tuple[str, list[str], list[Any]]:
    """The index a page walks and what the walk itself does: start below the cursor, stay in
    one rule. Either index yields the rows in page order (rowid ends every index entry), so
    nothing is sorted: an exact rule walks its part of incidents_rule (rule, last_seen), the
    rest walks incidents_last_seen, newest first."""
    clauses: list[str] = []
    args: list[Any] = []
    if q.before is not None:
        # `last_seen <= ?` alone is what the index can seek to; the rest drops the ties shown
        clauses.append("last_seen <= ? AND (last_seen < ? OR rowid < ?)")
        args += [q.before.last_seen, q.before.last_seen, q.before.rowid]
    exact = q.rule is not None and ":" in q.rule
    if exact:
        clauses.append("rule = ?")
        args.append(q.rule)
    return ("incidents_rule" if exact else "incidents_last_seen"), clauses, args


def _filters(q: PageQuery) -> tuple[list[str], list[Any]]:
    """What is tested row by row, in the table (no index holds it)."""
    clauses: list[str] = []
    args: list[Any] = []
    if q.min_severity is not None:
        sql, more = _rank_at_least(q.min_severity)
        clauses.append(sql)
        args += more
    if q.rule is not None and ":" not in q.rule:
        clauses.append("(rule = ? OR substr(rule, instr(rule, ':') + 1) = ?)")
        args += [q.rule, q.rule]
    if q.process is not None:
        clauses.append("instr(process, ?) > 0")
        args.append(q.process)
    if q.signature is not None:
        clauses.append("signature = ?")
        args.append(q.signature)
    return clauses, args


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def limit_of(q: PageQuery) -> int:
    return max(1, min(q.limit, PAGE_MAX))


def page_sql(q: PageQuery, floor: Cursor | None = None) -> tuple[str, list[Any]]:
    """The SELECT of one page (limit + 1 rows: the extra one says whether another follows),
    walking no further than `floor` (inclusive), where the page's bounded walk ends
    (`scan_end_sql`): a filter no index holds cannot make it walk the whole table."""
    index, seek, args = _seek(q)
    if floor is not None:
        seek.append("last_seen >= ? AND (last_seen > ? OR rowid >= ?)")
        args += [floor.last_seen, floor.last_seen, floor.rowid]
    filters, more = _filters(q)
    return (f"SELECT rowid AS _rowid, * FROM incidents INDEXED BY {index}"
            f"{_where(seek + filters)} ORDER BY last_seen DESC, rowid DESC LIMIT ?",
            [*args, *more, limit_of(q) + 1])


def scan_end_sql(q: PageQuery) -> tuple[str, list[Any]] | None:
    """The last of the `q.scan` incidents a filtered page may walk, read from the index alone
    (a few ms); None when the page has no row filter (its walk ends with the page)."""
    if not _filters(q)[0]:
        return None
    index, seek, args = _seek(q)
    return (f"SELECT last_seen, rowid FROM incidents INDEXED BY {index}{_where(seek)}"
            " ORDER BY last_seen DESC, rowid DESC LIMIT 1 OFFSET ?", [*args, q.scan - 1])


# The distinct rules by a skip-scan of incidents_rule: one index seek per rule (a policy has a
# few dozen), where SELECT DISTINCT walks every row's entry (~0.1 s for a million incidents)
RULES_SQL = """
WITH RECURSIVE r(rule) AS (
    SELECT MIN(rule) FROM incidents
    UNION ALL
    SELECT (SELECT MIN(rule) FROM incidents WHERE rule > r.rule) FROM r WHERE r.rule IS NOT NULL
) SELECT rule FROM r WHERE rule IS NOT NULL
"""


def dns_names_sql(limit: int) -> tuple[str, list[Any]]:
    """The names the resolver refused most recently: DNS incidents are rows whose rule is
    `dns:<rule>` and whose `dst` is the name (`monitor.dns_incidents`); the rule index finds
    them without a scan of the packet incidents."""
    return ("SELECT dst AS name, rule, SUM(count) AS queries, MAX(last_seen) AS last,"
            " COUNT(DISTINCT process) AS processes FROM incidents"
            " WHERE rule >= 'dns:' AND rule < 'dns;' GROUP BY dst, rule"
            " ORDER BY last DESC LIMIT ?", [limit])


def rows(db: sqlite3.Connection, sql: str, args: list[Any]) -> list[sqlite3.Row]:
    return db.execute(sql, args).fetchall()
