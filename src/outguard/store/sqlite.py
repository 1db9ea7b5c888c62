"""The SQLite store: one file, WAL, schema migrations, retention by age and size.

Place in the data flow: `writer.BatchWriter` calls `write` with batches of incidents; the CLI
(`events`, `top`) and the lab read with `query`/`top`, concurrently (WAL lets readers run beside
the writer). Migrations are numbered SQL scripts; `PRAGMA user_version` records the last one run,
and each runs in its own transaction. The database is created with incremental auto-vacuum so that
retention by size can give pages back to the file system.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from outguard.events import SEVERITIES, Classification, Incident, LearnedFlow
from outguard.store import flowrows, flowsummary, pages
from outguard.store.base import MAX_FLOWS, Query, Retention, StoreError, TopRow

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: incidents
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        process TEXT NOT NULL, dst TEXT NOT NULL, dport INTEGER, rule TEXT NOT NULL,
        proto TEXT NOT NULL, signature TEXT NOT NULL, title TEXT NOT NULL,
        severity TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
        count INTEGER NOT NULL, pid INTEGER, uid INTEGER, user TEXT, cmdline TEXT NOT NULL,
        unit TEXT, names TEXT NOT NULL, feed TEXT
    );
    CREATE INDEX incidents_last_seen ON incidents(last_seen);
    """,
    # 2: container, attribution failure, every classification, alerts sent; rule lookups
    """
    ALTER TABLE incidents ADD COLUMN container TEXT;
    ALTER TABLE incidents ADD COLUMN attribution_failure TEXT;
    ALTER TABLE incidents ADD COLUMN classifications TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE incidents ADD COLUMN alerts INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX incidents_rule ON incidents(rule, last_seen);
    """,
    # 3: what the kernel did (dropped, rejected, logged only), the parent process
    """
    ALTER TABLE incidents ADD COLUMN action TEXT;
    ALTER TABLE incidents ADD COLUMN ppid INTEGER;
    ALTER TABLE incidents ADD COLUMN parent TEXT;
    """,
    # 4: learned flows (issue 16) and their books
    flowrows.MIGRATION,
    # 5: the learned flows summarised by walking indexes (`flowsummary`)
    flowrows.INDEXES,
)
SCHEMA_VERSION = len(MIGRATIONS)
COLUMNS = ("id", "process", "dst", "dport", "rule", "proto", "signature", "title", "severity",
           "first_seen", "last_seen", "count", "pid", "uid", "user", "cmdline", "unit", "names",
           "feed", "container", "attribution_failure", "classifications", "alerts", "action",
           "ppid", "parent")
_RANK = "CASE severity " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SEVERITIES)) + \
    " ELSE 0 END"


def _ts(when: datetime) -> float:
    return when.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _hint(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (" (the file is damaged: move it aside; `outguard run` starts a new one, and"
                " `sqlite3 FILE .recover` may save its rows)")
    if "unable to open" in text or "readonly" in text:
        return " (check that the state directory exists and that you may read it: run as root)"
    return ""


def _row(inc: Incident) -> tuple[Any, ...]:
    return (inc.id, inc.process, inc.dst, inc.dport, inc.rule, inc.proto, inc.signature,
            inc.title, inc.severity, _ts(inc.first_seen), _ts(inc.last_seen), inc.count, inc.pid,
            inc.uid, inc.user, json.dumps(list(inc.cmdline)), inc.unit, json.dumps(list(inc.names)),
            inc.feed, inc.container, inc.attribution_failure,
            json.dumps([[c.signature, c.title, c.severity] for c in inc.classifications]),
            inc.alerts, inc.action, inc.ppid, inc.parent)


def _incident(r: sqlite3.Row) -> Incident:
    return Incident(
        id=r["id"], process=r["process"], dst=r["dst"], dport=r["dport"], rule=r["rule"],
        proto=r["proto"], signature=r["signature"], title=r["title"], severity=r["severity"],
        first_seen=_dt(r["first_seen"]), last_seen=_dt(r["last_seen"]), count=r["count"],
        pid=r["pid"], uid=r["uid"], user=r["user"], cmdline=tuple(json.loads(r["cmdline"])),
        unit=r["unit"], names=tuple(json.loads(r["names"])), feed=r["feed"],
        container=r["container"], attribution_failure=r["attribution_failure"],
        classifications=[Classification(*c) for c in json.loads(r["classifications"])],
        alerts=r["alerts"], action=r["action"], ppid=r["ppid"], parent=r["parent"])


class SQLiteStore:
    def __init__(self, path: Path, *, readonly: bool = False, max_flows: int = MAX_FLOWS) -> None:
        self.path = path
        self.max_flows = max(1, max_flows)
        self._lock = threading.Lock()
        try:
            if readonly:
                if not path.exists():
                    raise StoreError(f"no event store at {path} (has `outguard run` run here?)")
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                           check_same_thread=False, timeout=10)
            else:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._db = sqlite3.connect(path, check_same_thread=False, timeout=10,
                                           isolation_level=None)
                path.chmod(0o600)
            self._db.row_factory = sqlite3.Row
            if not readonly:
                # before anything writes the file's header (WAL does): it cannot change later
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self.migrate()
            else:
                self._check_version()
        except sqlite3.Error as exc:
            raise StoreError(f"event store {path}: {exc}{_hint(exc)}") from exc
        except OSError as exc:  # the directory cannot be made or the file not chmod-ed
            raise StoreError(f"event store {path}: {exc.strerror or exc}") from exc

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self) -> None:
        if self.version > SCHEMA_VERSION:
            raise StoreError(f"event store {self.path} has schema version {self.version}, newer"
                             f" than this outguard knows ({SCHEMA_VERSION}); upgrade outguard")
        if self.version < SCHEMA_VERSION:
            raise StoreError(f"event store {self.path} has schema version {self.version}; "
                             "open it once for writing (`outguard run`) to migrate it")

    def migrate(self) -> list[int]:
        """Run the migrations this file has not had; return their numbers."""
        done = []
        with self._lock:
            current = self.version
            if current > SCHEMA_VERSION:
                self._check_version()
            for number in range(current + 1, SCHEMA_VERSION + 1):
                script = MIGRATIONS[number - 1]
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    for stmt in filter(str.strip, script.split(";")):
                        self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={number}")
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"event store {self.path}: migration {number} failed: {exc}"
                                     " (nothing of it was applied)") from exc
                done.append(number)
        return done

    def write(self, incidents: Sequence[Incident]) -> None:
        if not incidents:
            return
        sql = (f"INSERT INTO incidents ({', '.join(COLUMNS)}) VALUES"
               f" ({', '.join('?' * len(COLUMNS))}) ON CONFLICT(id) DO UPDATE SET "
               + ", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:]))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, [_row(i) for i in incidents])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"event store {self.path}: write failed: {exc}"
                                 f"{_hint(exc)}") from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def record_flows(self, flows: Sequence[LearnedFlow]) -> None:
        """Merge learned flows by key in one transaction (`flowrows`), then hold the table to
        `max_flows` rows, the least recently seen dropped first and counted (`dropped_flows`)."""
        if not flows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                flowrows.record(self._db, flows, self.max_flows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"event store {self.path}: recording flows failed: {exc}"
                                 f"{_hint(exc)}") from exc

    def flows(self, since: datetime | None = None) -> list[LearnedFlow]:
        """The learned flows last seen at or after `since`, most recently seen first."""
        with self._lock:
            try:
                return flowrows.read(self._db, since)
            except sqlite3.Error as exc:
                raise StoreError(f"event store {self.path} cannot be read: {exc}"
                                 f"{_hint(exc)}") from exc
            except (ValueError, TypeError, KeyError) as exc:  # a row written by no outguard
                raise StoreError(f"event store {self.path} holds a damaged flow: {exc}") from exc

    def flows_iter(self, since: datetime | None = None) -> Iterator[LearnedFlow]:
        """`flows`, one at a time: a million rows never held at once."""
        rows = self._reading(lambda db: flowsummary.iterate(db, since))
        while True:
            chunk = self._reading(lambda _db: list(itertools.islice(rows, 2000)))
            if not chunk:
                return
            yield from chunk

    def flows_summary(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read` (one of `flowsummary`'s functions, bound to its arguments, its rows consumed
        inside `read`) over the learned table, with the store's lock and errors."""
        def sorting(db: sqlite3.Connection) -> T:
            # a GROUP BY over a million rows sorts them: a 64 MiB cache lets the sorter work
            # in memory runs (2 MiB, the default, spills to many small files, ~4x slower)
            before = db.execute("PRAGMA cache_size").fetchone()[0]
            db.execute("PRAGMA cache_size = -65536")
            try:
                return read(db)
            finally:
                db.execute(f"PRAGMA cache_size = {int(before)}")
        return self._reading(sorting)

    def _reading(self, read: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return read(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"event store {self.path} cannot be read: {exc}"
                                 f"{_hint(exc)}") from exc
            except (ValueError, TypeError, KeyError) as exc:  # a row written by no outguard
                raise StoreError(f"event store {self.path} holds a damaged flow: {exc}") from exc

    def dropped_flows(self) -> int:
        """Learned flows the size bound removed, over the file's life."""
        with self._lock:
            try:
                return flowrows.dropped(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"event store {self.path} cannot be read: {exc}"
                                 f"{_hint(exc)}") from exc

    def _where(self, q: Query) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if q.since is not None:
            clauses.append("last_seen >= ?")
            args.append(_ts(q.since))
        if q.rule is not None and ":" not in q.rule:
            # a bare rule name: that rule in any section (`attacker-net` is `deny:attacker-net`)
            clauses.append("(rule = ? OR substr(rule, instr(rule, ':') + 1) = ?)")
            args += [q.rule, q.rule]
        elif q.rule is not None:
            clauses.append("rule = ?")
            args.append(q.rule)
        if q.process is not None:
            clauses.append("instr(process, ?) > 0")
            args.append(q.process)
        if q.signature is not None:
            clauses.append("signature = ?")
            args.append(q.signature)
        if q.min_severity is not None:
            clauses.append(f"({_RANK}) >= ?")
            args.append(SEVERITIES.index(q.min_severity))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _read(self, sql: str, args: list[Any]) -> list[sqlite3.Row]:
        """Rows of a query; a damaged or unreadable file is a StoreError that says so."""
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"event store {self.path} cannot be read: {exc}"
                                 f"{_hint(exc)}") from exc

    def query(self, q: Query) -> list[Incident]:
        where, args = self._where(q)
        return self._incidents(self._read(f"SELECT * FROM incidents{where} ORDER BY last_seen"
                                          " DESC LIMIT ?", [*args, q.limit]))

    def incidents_page(self, q: pages.PageQuery) -> tuple[list[Incident], pages.Cursor | None]:
        """One page of incidents, newest first, and the cursor of the next page (`pages`):
        a filtered page may be short and still have one (its walk was bounded)."""
        end = pages.scan_end_sql(q)
        walked = self._read(*end) if end is not None else []
        floor = pages.Cursor(walked[0][0], walked[0][1]) if walked else None
        rows = self._read(*pages.page_sql(q, floor))
        if len(rows) > pages.limit_of(q):
            rows = rows[:-1]
            return self._incidents(rows), pages.Cursor(rows[-1]["last_seen"], rows[-1]["_rowid"])
        return self._incidents(rows), floor  # short: the walk ended at the floor, or the table

    def incident(self, incident_id: str) -> Incident | None:
        found = self._incidents(self._read("SELECT * FROM incidents WHERE id = ?", [incident_id]))
        return found[0] if found else None

    def rule_names(self) -> list[str]:
        """Every rule that has incidents, in order (`pages.RULES_SQL`: a seek per rule)."""
        return [r[0] for r in self._read(pages.RULES_SQL, [])]

    def dns_names(self, limit: int = 200) -> list[sqlite3.Row]:
        """The names the resolver refused, most recent first (`pages.dns_names_sql`)."""
        return self._read(*pages.dns_names_sql(limit))

    def _incidents(self, rows: list[sqlite3.Row]) -> list[Incident]:
        try:
            return [_incident(r) for r in rows]
        except (ValueError, TypeError, KeyError) as exc:  # a row written by no outguard
            raise StoreError(f"event store {self.path} holds a damaged row: {exc}") from exc

    def rules(self, since: datetime | None = None) -> list[str]:
        """The rules that have incidents (since `since`), for hints."""
        where, args = self._where(Query(since=since))
        return [r[0] for r in self._read(f"SELECT DISTINCT rule FROM incidents{where}"
                                         " ORDER BY rule", args)]

    def top(self, by: Literal["process", "destination"], since: datetime | None,
            limit: int = 10) -> list[TopRow]:
        key = "process" if by == "process" else \
            "CASE WHEN dport IS NULL THEN dst ELSE dst || ':' || dport END"
        where, args = self._where(Query(since=since))
        rows = self._read(
            f"SELECT {key} AS k, COUNT(*) AS n, SUM(count) AS packets, MAX(last_seen) AS last,"
            f" MAX({_RANK}) AS worst FROM incidents{where} GROUP BY k"
            " ORDER BY packets DESC, last DESC LIMIT ?", [*args, limit])
        return [TopRow(r["k"], r["n"], r["packets"], _dt(r["last"]), SEVERITIES[r["worst"]])
                for r in rows]

    def size(self) -> int:
        """Bytes in use (pages that hold data; free pages are not counted)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._db.execute("PRAGMA page_size").fetchone()[0])

    def prune(self, now: datetime, retention: Retention) -> int:
        removed = 0
        with self._lock:
            try:
                if retention.max_age is not None:
                    cur = self._db.execute("DELETE FROM incidents WHERE last_seen < ?",
                                           [_ts(now - retention.max_age)])
                    removed += cur.rowcount
                if retention.max_bytes is not None:
                    while self.size() > retention.max_bytes:
                        total = self._db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
                        if total == 0:
                            break
                        # the oldest tenth at a time: few passes, never the whole table at once
                        cur = self._db.execute(
                            "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents"
                            " ORDER BY last_seen LIMIT ?)", [max(1, total // 10)])
                        removed += cur.rowcount
                if removed:
                    self._db.execute("PRAGMA incremental_vacuum")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise StoreError(f"event store {self.path}: retention failed: {exc}") from exc
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
