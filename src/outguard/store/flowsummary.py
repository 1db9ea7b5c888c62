"""The learned-flows table summarised in SQL: what `suggest` and `simulate` need from a million
rows, without a million Python objects.

Place in the data flow: the `flows` table (`flowrows`) → **here** → `journey.aggregate` (suggest)
and `journey.simulate` (the summary). SQLite groups the rows by what the journey distinguishes
(suggest: the service, destination and protocol; simulate: the question decide() is asked, the
process and what was recorded), so Python sees one row per group: tens of thousands, not a
million. Times stay epoch seconds here; the journey turns a group's first/last into datetimes.
The classified rows (medium or worse) come back whole: they are few and each is listed.

Called with the store's lock held; these functions only read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from outguard.events import SEVERITIES, LearnedFlow, severity_rank
from outguard.journey.aggregate import SuggestRow
from outguard.journey.simulate import Question
from outguard.store.flowrows import SERVICE, flow_of_row

# the classifier's verdicts that keep a flow from ever being allowed (`journey.aggregate`)
_BAD = tuple(s for s in SEVERITIES if severity_rank(s) >= severity_rank("medium"))
_BAD_SQL = f"severity IN ({', '.join(repr(s) for s in _BAD)})"
# `journey.simulate.recorded_allowed`, in SQL
_GOT_OUT = ("(decision = '' OR substr(decision, 1, 6) = 'allow:'"
            " OR substr(decision, 1, 8) = 'builtin:' OR decision LIKE '% audit')")


def _since(since: datetime | None, more: str = "") -> tuple[str, list[Any]]:
    clauses = [c for c in (more,) if c]
    args: list[Any] = []
    if since is not None:
        clauses.append("last_seen >= ?")
        args.append(since.timestamp())
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def classified(db: sqlite3.Connection, since: datetime | None,
               dsts: Iterable[str]) -> list[LearnedFlow]:
    """The rows to these addresses classified medium or worse, whole, in `Store.flows`' order
    (found through `flows_question`, whose first column is the address: no table scan)."""
    where, args = _since(since, f"dst IN (SELECT value FROM json_each(?)) AND {_BAD_SQL}")
    rows = db.execute(f"SELECT * FROM flows{where} ORDER BY last_seen DESC, k",
                      [json.dumps(sorted(set(dsts))), *args])
    return [flow_of_row(r) for r in rows.fetchall()]


def suggest_rows(db: sqlite3.Connection, since: datetime | None,
                 per_host: bool) -> Iterator[SuggestRow]:
    """One row per (service, dst, proto, severity), walking `flows_service`: rows,
    connections, first, last, and as JSON the distinct ports, executables, owners (uid, user,
    unit, cgroup) and name lists; `per_host`: every row's service is "host" (sorted)."""
    where, args = _since(since)
    service = "'host'" if per_host else SERVICE
    group = "dst, proto, severity" if per_host else f"{SERVICE}, dst, proto, severity"
    # group_concat of JSON texts, wrapped in brackets, is a JSON list of them
    for r in db.execute(
            f"SELECT {service}, dst, proto, COALESCE({_BAD_SQL}, 0), COUNT(*), SUM(count),"
            " MIN(first_seen), MAX(last_seen), '[' || group_concat(DISTINCT"
            " COALESCE(port, 'null')) || ']', '[' || group_concat(DISTINCT"
            " json_quote(COALESCE(NULLIF(exe, ''), '?'))) || ']', '[' || group_concat(DISTINCT"
            " json_array(uid, user, unit, cgroup)) || ']', '[' || group_concat(DISTINCT names)"
            f" || ']' FROM flows{where} GROUP BY {group}", args):
        yield (str(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4]), int(r[5]), float(r[6]),
               float(r[7]), str(r[8]), str(r[9]), str(r[10]), str(r[11]))


def questions(db: sqlite3.Connection, since: datetime | None) -> Iterator[Question]:
    """One row per question decide() is asked: (dst, port, proto, uid, cgroup, rows, the
    distinct name lists of its rows as a JSON list)."""
    where, args = _since(since)
    for r in db.execute(f"SELECT dst, port, proto, uid, cgroup, COUNT(*), '[' || group_concat("
                        f"DISTINCT names) || ']' FROM flows{where} GROUP BY 1, 2, 3, 4, 5", args):
        yield str(r[0]), r[1], str(r[2]), r[3], r[4], int(r[5]), str(r[6])


def flows_to(db: sqlite3.Connection, since: datetime | None,
             dsts: Iterable[str]) -> list[LearnedFlow]:
    """The rows to these addresses, whole, in `Store.flows`' order."""
    where, args = _since(since, "dst IN (SELECT value FROM json_each(?))")
    rows = db.execute(f"SELECT * FROM flows{where} ORDER BY last_seen DESC, k",
                      [json.dumps(sorted(set(dsts))), *args])
    return [flow_of_row(r) for r in rows.fetchall()]


def iterate(db: sqlite3.Connection, since: datetime | None) -> Iterator[LearnedFlow]:
    """The rows one at a time, in `Store.flows`' order, never all in memory."""
    where, args = _since(since)
    cursor = db.execute(f"SELECT * FROM flows{where} ORDER BY last_seen DESC, k", args)
    while True:
        rows = cursor.fetchmany(2000)
        if not rows:
            return
        for r in rows:
            yield flow_of_row(r)
