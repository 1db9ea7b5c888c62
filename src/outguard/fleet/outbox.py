"""The agent's local durable outbox: incidents and learned flows wait here for the fleet server.

Place in the data flow: store write (`fleet.tee.Teed`, in the store writer's thread) →
**Outbox** (SQLite, STATE_DIR/fleet/outbox.db) → `fleet.sender` drains it in batches
(POST /v1/incidents, /v1/flows) → `ack`. The agent stays autonomous: while the server or its
database is away the outbox grows, up to `bound` waiting items; beyond that a new item is
dropped and counted, never lost in silence. Below the bound nothing is lost, across restarts
and a killed process too (every put is one committed transaction, `synchronous=FULL`).

Keys. An item is (kind, id): the incident's id, or a learned flow's key digest. The server
inserts by (host, id) and keeps one row, so sending is at-least-once and rows exactly-once.
An incident grows after it is first sent (its count, last seen, a risen severity): a later
update (`replace`) replaces a waiting copy, and queues one already sent again — the server
replaces its row with the copy whose `last_seen` is newer (a trial found the fleet's counts
frozen at the first copy). The updated item goes to the back with a new seq, so an `ack` of
the copy a sender took before the update leaves the newer one waiting. Learned flows are
deltas (`replace=False`): the first record stays.

Books, per kind, kept in the same transactions as the items, so they balance after a crash:
`enqueued` (new items handed over, the dropped ones included) = `sent` + `pending` +
`dropped` (the bound was reached) + `rejected` (the server refused the item itself: 400/413/
422 for a batch of one). Order: oldest first (FIFO by insertion).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KINDS = ("incidents", "flows")
DEFAULT_BOUND = 100_000  # waiting items per kind; an incident record is ~1 KB: ~100 MB at most
DEFAULT_KEEP_SENT = 20_000  # sent ids remembered (beyond them an update is queued as new)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    record TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, id)
);
CREATE INDEX IF NOT EXISTS items_pending ON items (kind, seq) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS items_sent ON items (kind, seq) WHERE sent = 1;
CREATE TABLE IF NOT EXISTS books (
    kind TEXT PRIMARY KEY,
    enqueued INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0
);
"""


class OutboxError(Exception):
    """The outbox file cannot be opened or written (sqlite3's error, with the path)."""


@dataclass(frozen=True)
class Item:
    seq: int
    id: str
    ts: float
    record: dict[str, Any]


@dataclass(frozen=True)
class Books:
    enqueued: int = 0
    sent: int = 0
    pending: int = 0
    dropped: int = 0
    rejected: int = 0

    @property
    def balanced(self) -> bool:
        return self.enqueued == self.sent + self.pending + self.dropped + self.rejected

    def to_json(self) -> dict[str, int | bool]:
        return {**asdict(self), "balanced": self.balanced}


class Outbox:
    """Thread-safe (one connection behind a lock): the store writer's thread puts, the
    sender's worker threads take and ack."""

    def __init__(self, path: Path, *, bound: int = DEFAULT_BOUND,
                 keep_sent: int = DEFAULT_KEEP_SENT) -> None:
        self.path, self.bound, self.keep_sent = path, max(1, bound), max(0, keep_sent)
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # the transactions are ours (BEGIN IMMEDIATE): no implicit ones
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            path.chmod(0o600)  # incident records name processes and destinations
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed put survives a power cut too, not only a killed process
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            for kind in KINDS:
                self._db.execute("INSERT OR IGNORE INTO books (kind) VALUES (?)", (kind,))
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"fleet outbox {path}: {exc}") from exc

    def _tx(self) -> _Tx:
        return _Tx(self)

    def put(self, kind: str, items: Iterable[tuple[str, float, dict[str, Any]]], *,
            replace: bool = True) -> int:
        """Queue (id, ts, record) items of `kind` in one transaction; how many were dropped
        because the bound was reached. `replace`: a record replaces the one of the same id
        still waiting (a whole newer copy); else the first stays (records that are deltas).
        OutboxError when it cannot be written (nothing of the call is then kept: the caller
        tries again)."""
        _check(kind)
        dropped = 0
        with self._tx() as db:
            pending = db.execute("SELECT pending FROM books WHERE kind = ?", (kind,)).fetchone()[0]
            new = 0
            for item_id, ts, record in items:
                text = json.dumps(record, separators=(",", ":"), default=str)
                row = db.execute("SELECT seq, sent FROM items WHERE kind = ? AND id = ?",
                                 (kind, item_id)).fetchone()
                if row is not None:
                    if not replace:
                        continue
                    if row[1]:  # sent: the newer copy goes again (the server keeps the newest)
                        if pending + new >= self.bound:
                            dropped += 1
                            continue
                        new += 1
                    # a new seq: an `ack` of the copy a sender took before this update must
                    # not mark the newer one sent
                    db.execute("DELETE FROM items WHERE seq = ?", (row[0],))
                    db.execute("INSERT INTO items (kind, id, ts, record) VALUES (?, ?, ?, ?)",
                               (kind, item_id, ts, text))
                    continue
                if pending + new >= self.bound:
                    dropped += 1
                    continue
                db.execute("INSERT INTO items (kind, id, ts, record) VALUES (?, ?, ?, ?)",
                           (kind, item_id, ts, text))
                new += 1
            db.execute("UPDATE books SET enqueued = enqueued + ?, pending = pending + ?,"
                       " dropped = dropped + ? WHERE kind = ?",
                       (new + dropped, new, dropped, kind))
        return dropped

    def take(self, kind: str, limit: int) -> list[Item]:
        """The oldest `limit` waiting items of `kind` (they stay until `ack` or `reject`)."""
        _check(kind)
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, id, ts, record FROM items WHERE kind = ? AND sent = 0"
                    " ORDER BY seq LIMIT ?", (kind, max(1, limit))).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"fleet outbox {self.path}: {exc}") from exc
        return [Item(seq, item_id, ts, json.loads(record)) for seq, item_id, ts, record in rows]

    def ack(self, kind: str, seqs: Sequence[int]) -> int:
        """The server has these (new or duplicates): counted sent; how many were waiting."""
        return self._settle(kind, seqs, "sent")

    def reject(self, kind: str, seqs: Sequence[int]) -> int:
        """The server refuses these items themselves: counted rejected, never sent again."""
        return self._settle(kind, seqs, "rejected")

    def _settle(self, kind: str, seqs: Sequence[int], column: str) -> int:
        _check(kind)
        if not seqs:
            return 0
        marks = ",".join("?" * len(seqs))
        with self._tx() as db:
            # a settled item is kept as a sent id (sent=1), which `put` recognizes
            done = db.execute(f"UPDATE items SET sent = 1 WHERE kind = ? AND sent = 0"
                              f" AND seq IN ({marks})", (kind, *seqs)).rowcount
            db.execute(f"UPDATE books SET {column} = {column} + ?, pending = pending - ?"
                       " WHERE kind = ?", (done, done, kind))
            self._forget_sent(db, kind)
        return done

    def _forget_sent(self, db: sqlite3.Connection, kind: str) -> None:
        count = db.execute("SELECT count(*) FROM items WHERE kind = ? AND sent = 1",
                           (kind,)).fetchone()[0]
        if count > self.keep_sent + 1000:  # in steps, not at every ack
            db.execute("DELETE FROM items WHERE seq IN (SELECT seq FROM items WHERE kind = ?"
                       " AND sent = 1 ORDER BY seq LIMIT ?)", (kind, count - self.keep_sent))

    def books(self, kind: str) -> Books:
        _check(kind)
        with self._lock:
            try:
                row = self._db.execute("SELECT enqueued, sent, pending, dropped, rejected FROM"
                                       " books WHERE kind = ?", (kind,)).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"fleet outbox {self.path}: {exc}") from exc
        return Books(*row)

    def pending_counted(self, kind: str) -> int:
        """The waiting items counted in the table (the books' `pending` is kept beside them;
        tests compare the two)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM items WHERE kind = ? AND"
                                        " sent = 0", (kind,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT under the outbox's lock; ROLLBACK on any error."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._lock.acquire()
        try:
            self.outbox._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.outbox._lock.release()
            raise OutboxError(f"fleet outbox {self.outbox.path}: {exc}") from exc
        return self.outbox._db

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> None:
        db = self.outbox._db
        try:
            if kind is None:
                try:
                    db.execute("COMMIT")
                    return
                except sqlite3.Error as err:
                    db.execute("ROLLBACK")
                    raise OutboxError(f"fleet outbox {self.outbox.path}: {err}") from err
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(f"fleet outbox {self.outbox.path}: {exc}") from exc
        finally:
            self.outbox._lock.release()


def read_books(path: Path) -> dict[str, Books] | None:
    """The books of an outbox file, read-only (`outguard status`); None if there is none."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT kind, enqueued, sent, pending, dropped, rejected"
                              " FROM books").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return {row[0]: Books(*row[1:]) for row in rows}


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r} (one of {', '.join(KINDS)})")
