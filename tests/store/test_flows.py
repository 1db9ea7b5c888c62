"""Learned flows in the SQLite store, on real files: merge by key, order, bound, restarts."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outguard.events import LearnedFlow
from outguard.store import StoreError, open_store
from outguard.store.base import LateStore, Store
from outguard.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def flow(dst: str = "203.0.113.7", port: int | None = 443, *, at: float = 0.0,
         **kw: object) -> LearnedFlow:
    base = LearnedFlow(exe="/usr/bin/curl", cmdline=("curl", "https://api.example"),
                       user="app", uid=1000, unit="app.service", cgroup="/system.slice/app.service",
                       container=None, dst=dst, port=port, proto="tcp", names=("api.example",),
                       count=1, first_seen=T0 + timedelta(seconds=at),
                       last_seen=T0 + timedelta(seconds=at), decision="allow:api")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_record_and_read_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    f6 = flow("2001:db8::7", 53, proto="udp", names=(), unit=None, container="web-1",
              signature="jndi-callback", severity="critical", decision="")
    store.record_flows([flow(), f6])
    got = store.flows()
    assert sorted(got, key=lambda f: f.dst) == sorted([flow(), f6], key=lambda f: f.dst)
    store.close()


def test_merge_by_key(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.record_flows([flow(at=10, names=("b.example",), decision="default")])
    # an older sighting arrives later: it widens first_seen but does not win the decision
    store.record_flows([flow(at=0, count=2, names=("a.example", "B.example."),
                             decision="deny:old", cmdline=("old",))])
    store.record_flows([flow(at=20, names=(), decision="allow:api", uid=None, cgroup=None,
                             cmdline=("curl", "-v"))])
    (got,) = store.flows()
    assert got.count == 4
    assert (got.first_seen, got.last_seen) == (T0, T0 + timedelta(seconds=20))
    assert got.names == ("a.example", "b.example")
    assert got.decision == "allow:api"
    assert got.cmdline == ("curl", "-v")
    assert (got.uid, got.cgroup) == (1000, "/system.slice/app.service")  # None does not erase
    store.close()


def test_a_signature_once_set_is_never_cleared(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.record_flows([flow(at=0, signature="jndi-callback", severity="critical")])
    store.record_flows([flow(at=5)])
    (got,) = store.flows()
    assert (got.signature, got.severity, got.count) == ("jndi-callback", "critical", 2)
    store.record_flows([flow(at=9, signature="tunnel", severity="high")])
    (got,) = store.flows()
    assert (got.signature, got.severity) == ("tunnel", "high")
    store.close()


def test_every_part_of_the_key_separates_flows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    variants = [flow(), flow(exe=None), flow(user=None), flow(unit="other.service"),
                flow(container="c1"), flow("203.0.113.8"), flow(port=None), flow(proto="udp")]
    store.record_flows(variants + variants)  # duplicates within one batch merge too
    got = store.flows()
    assert len(got) == len(variants)
    assert {f.key for f in got} == {f.key for f in variants}
    assert all(f.count == 2 for f in got)
    store.close()


def test_since_and_deterministic_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    batch = [flow(f"203.0.113.{i}", at=i // 2) for i in range(10)]
    store.record_flows(list(reversed(batch)))
    first = store.flows()
    assert [f.dst for f in first] == [f.dst for f in store.flows()]
    assert [f.last_seen for f in first] == sorted((f.last_seen for f in first), reverse=True)
    recent = store.flows(since=T0 + timedelta(seconds=3))
    assert {f.dst for f in recent} == {f"203.0.113.{i}" for i in range(6, 10)}
    other = SQLiteStore(tmp_path / "f.db")
    other.record_flows(batch)
    assert [f.dst for f in other.flows()] == [f.dst for f in first]  # not insertion order
    store.close()
    other.close()


def test_bounded_oldest_dropped_first_and_counted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db", max_flows=5)
    store.record_flows([flow(f"203.0.113.{i}", at=i) for i in range(8)])
    assert {f.dst for f in store.flows()} == {f"203.0.113.{i}" for i in range(3, 8)}
    assert store.dropped_flows() == 3
    # a flow seen again is fresh again: the oldest untouched one goes instead
    store.record_flows([flow("203.0.113.3", at=100), flow("203.0.113.99", at=101)])
    assert "203.0.113.4" not in {f.dst for f in store.flows()}
    assert "203.0.113.3" in {f.dst for f in store.flows()}
    assert store.dropped_flows() == 4
    store.close()


def test_flows_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = open_store(path)
    store.record_flows([flow()])
    store.close()
    again = open_store(path)
    again.record_flows([flow(at=60)])
    (got,) = again.flows()
    assert got.count == 2
    again.close()
    ro = SQLiteStore(path, readonly=True)
    assert [f.count for f in ro.flows()] == [2]
    ro.close()


def test_an_existing_v3_store_is_migrated_keeping_its_incidents(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(";".join(MIGRATIONS[:3]) + "; PRAGMA user_version=3;")
    raw.execute("INSERT INTO incidents (id, process, dst, dport, rule, proto, signature, title,"
                " severity, first_seen, last_seen, count, cmdline, names) VALUES"
                " ('old1', '/usr/bin/curl', '203.0.113.1', 443, 'default', 'tcp', 'blocked',"
                " 'blocked', 'low', 0, 0, 3, '[]', '[]')")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="migrate"):
        SQLiteStore(path, readonly=True)  # a reader asks for the migration, never half-reads
    store = SQLiteStore(path)
    assert store.version == SCHEMA_VERSION
    assert store.flows() == [] and store.dropped_flows() == 0
    store.record_flows([flow()])
    assert len(store.flows()) == 1
    store.close()


def test_a_damaged_flow_row_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO flows VALUES ('x', NULL, 'not json', NULL, NULL, NULL, NULL, NULL,"
                " '203.0.113.1', 443, 'tcp', '[]', 1, 0, 0, '', NULL, NULL)")
    raw.commit()
    raw.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="damaged flow"):
        store.flows()
    store.close()


def test_late_store_records_once_it_opens(tmp_path: Path) -> None:
    attempts: list[int] = []
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")

    def opener() -> Store:
        attempts.append(1)
        return SQLiteStore(blocker / "e.db")

    late = LateStore(opener, StoreError("first"))
    assert late.flows() == [] and late.dropped_flows() == 0
    late.record_flows([])  # nothing to write: no attempt
    assert attempts == []
    with pytest.raises(StoreError):
        late.record_flows([flow()])
    blocker.unlink()
    late.record_flows([flow()])
    assert [f.dst for f in late.flows()] == ["203.0.113.7"]
    late.close()


def test_names_per_flow_are_bounded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    for i in range(0, 100, 10):
        store.record_flows([flow(names=tuple(f"n{j:03}.cdn.example" for j in range(i, i + 10)))])
    (got,) = store.flows()
    assert got.names == tuple(f"n{j:03}.cdn.example" for j in range(64))
    store.close()
