"""The SQLite store on real files: migrations, WAL, queries, retention, batched writes."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from outguard.events import Incident
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.classify import load_classifier
from outguard.store import StoreError, open_store
from outguard.store.base import Query, Retention
from outguard.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from outguard.store.writer import BatchWriter
from tests.monitor.events import T0, event

C = load_classifier()


def incidents(n: int, *, spacing: float = 1.0, **kw: object) -> list[Incident]:
    agg = Aggregator()
    out = []
    for i in range(n):
        ev = event(dport=1000 + i, at=i * spacing, **kw)  # type: ignore[arg-type]
        ev.classifications = C.classify(ev)
        out.append(agg.add(ev).incident)
    return out


def test_new_file_is_wal_current_schema_and_private(tmp_path: Path) -> None:
    path = tmp_path / "db" / "events.db"
    store = SQLiteStore(path)
    assert store.version == SCHEMA_VERSION
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert path.stat().st_mode & 0o777 == 0o600
    store.close()


def test_v1_file_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    raw.execute("INSERT INTO incidents (id, process, dst, dport, rule, proto, signature, title,"
                " severity, first_seen, last_seen, count, cmdline, names) VALUES"
                " ('old1', '/usr/bin/curl', '203.0.113.1', 443, 'default', 'tcp', 'blocked',"
                " 'blocked', 'low', ?, ?, 3, '[]', '[]')", (T0.timestamp(), T0.timestamp()))
    raw.commit()
    raw.close()
    store = SQLiteStore(path)
    assert store.version == SCHEMA_VERSION
    (old,) = store.query(Query())
    assert (old.id, old.count, old.classifications, old.container) == ("old1", 3, [], None)
    assert store.migrate() == []  # idempotent
    store.close()


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    raw = sqlite3.connect(path)
    # a v1 file where someone already added one of migration 2's columns
    raw.executescript(MIGRATIONS[0] + "; ALTER TABLE incidents ADD COLUMN container TEXT;"
                      " PRAGMA user_version=1;")
    raw.close()
    with pytest.raises(StoreError, match="migration 2 failed"):
        SQLiteStore(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    cols = [r[1] for r in raw.execute("PRAGMA table_info(incidents)")]
    assert "attribution_failure" not in cols


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this outguard knows"):
        SQLiteStore(path)


def test_readonly_open_of_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no event store"):
        SQLiteStore(tmp_path / "absent.db", readonly=True)


def test_open_store_urls(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path}/a.db").close()
    assert (tmp_path / "a.db").exists()
    with pytest.raises(StoreError, match="PostgreSQL"):
        open_store("postgresql://db.example/outguard")


def test_write_upserts_and_round_trips(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    inc = incidents(1, exe="/usr/lib/jvm/java-17-openjdk-amd64/bin/java")[0]
    store.write([inc])
    inc.count, inc.last_seen = 7, inc.last_seen + timedelta(seconds=5)
    store.write([inc])
    (got,) = store.query(Query())
    assert got == inc


def test_query_filters(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    java = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    store.write(incidents(3) + incidents(2, exe=java, rule="deny:ldap"))
    assert len(store.query(Query())) == 5
    assert len(store.query(Query(rule="deny:ldap"))) == 2
    assert len(store.query(Query(process="jvm"))) == 2
    assert len(store.query(Query(min_severity="medium"))) == 2  # explicit-deny
    assert store.query(Query(min_severity="critical")) == []
    assert len(store.query(Query(since=T0 + timedelta(seconds=1.5)))) == 1  # t=2 only
    assert len(store.query(Query(limit=1))) == 1
    assert store.query(Query())[0].last_seen >= store.query(Query())[-1].last_seen


def test_top(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    many = incidents(3)
    many[0].count = 10
    store.write(many + incidents(1, exe="/usr/bin/wget"))
    rows = store.top("process", None)
    assert [(r.key, r.incidents, r.packets) for r in rows] == [
        ("/usr/bin/curl", 3, 12), ("/usr/bin/wget", 1, 1)]
    dests = store.top("destination", None, limit=1)
    assert (dests[0].key, dests[0].incidents, dests[0].packets) == ("203.0.113.7:1000", 2, 11)


def test_retention_by_age(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.write(incidents(10, spacing=3600))  # one per hour
    removed = store.prune(T0 + timedelta(hours=10), Retention(max_age=timedelta(hours=4),
                                                               max_bytes=None))
    assert removed == 6
    assert min(i.last_seen for i in store.query(Query())) == T0 + timedelta(hours=6)


def test_retention_by_size_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = SQLiteStore(path)
    batch = incidents(3000, spacing=1, exe="/opt/" + "x" * 200)
    store.write(batch)
    store.prune(T0, Retention(max_age=None, max_bytes=None))
    before = store.size()
    assert before > 400_000
    removed = store.prune(T0, Retention(max_age=None, max_bytes=100_000))
    assert removed > 0
    assert store.size() <= 100_000
    left = store.query(Query(limit=10_000))
    # the newest survive
    assert max(i.last_seen for i in left) == batch[-1].last_seen
    assert min(i.last_seen for i in left) > batch[0].last_seen
    store.close()
    assert path.stat().st_size < before  # pages went back to the file system


def test_batch_writer_coalesces_and_flushes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    calls: list[int] = []
    real_write = store.write

    def counting(batch):  # type: ignore[no-untyped-def]
        calls.append(len(batch))
        real_write(batch)

    store.write = counting  # type: ignore[method-assign]
    writer = BatchWriter(store, interval=5.0)
    inc = incidents(1)[0]
    for n in range(50):
        inc.count = n + 1
        writer.put(inc)
    writer.flush()
    (got,) = store.query(Query())
    assert got.count == 50
    assert sum(calls) == 1  # 50 updates of one incident: one row written
    writer.put(incidents(1, exe="/usr/bin/wget")[0])
    writer.close()  # close flushes what is left
    assert len(store.query(Query())) == 2


def test_batch_writer_survives_store_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    errors: list[Exception] = []
    fail_once = threading.Event()
    real_write = store.write

    def flaky(batch):  # type: ignore[no-untyped-def]
        if batch and not fail_once.is_set():
            fail_once.set()
            raise StoreError("disk full")
        real_write(batch)

    store.write = flaky  # type: ignore[method-assign]
    writer = BatchWriter(store, interval=0.05, on_error=lambda exc, _lost: errors.append(exc))
    writer.put(incidents(1)[0])
    writer.flush()
    writer.put(incidents(1, exe="/usr/bin/wget")[0])
    writer.flush()
    writer.close()
    assert [str(e) for e in errors] == ["disk full"] and writer.errors == 1
    # the failed batch was kept and written with the next one: nothing lost
    assert sorted(i.process for i in store.query(Query())) == ["/usr/bin/curl", "/usr/bin/wget"]
    assert writer.lost == 0


def test_a_store_that_stays_broken_loses_incidents_counted_never_silently(
        tmp_path: Path) -> None:
    """Hostile tester: a read-only state directory lost incidents in silence."""
    store = SQLiteStore(tmp_path / "e.db")

    def broken(batch):  # type: ignore[no-untyped-def]
        if batch:
            raise StoreError("attempt to write a readonly database")

    store.write = broken  # type: ignore[method-assign]
    reports: list[int] = []
    writer = BatchWriter(store, interval=0.02, batch=10, max_pending=10,
                         on_error=lambda _exc, lost: reports.append(lost))
    for inc in incidents(25):
        writer.put(inc)
        writer.flush()
    writer.close()
    assert writer.errors >= 2 and writer.lost == 25  # 15 pushed out, 10 left at the end
    assert reports and reports[-1] == 15 and reports == sorted(reports)
