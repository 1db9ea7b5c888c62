"""The learned table read in bulk (`store.flowsummary`): streamed rows are `flows()`, and the
summary walks its covering indexes instead of sorting the table (what keeps a million rows
within seconds)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from outguard.events import LearnedFlow
from outguard.store import flowsummary
from outguard.store.sqlite import SQLiteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _flows() -> list[LearnedFlow]:
    base = LearnedFlow(exe="/usr/bin/curl", cmdline=("curl",), user="app", uid=1000,
                       unit="app.service", cgroup="/system.slice/app.service", container=None,
                       dst="203.0.113.7", port=443, proto="tcp", names=("api.example",),
                       count=1, first_seen=T0, last_seen=T0)
    return [dataclasses.replace(base, dst=f"203.0.113.{i % 50}", port=1000 + i % 7,
                                unit=None if i % 3 else "app.service",
                                last_seen=T0 + timedelta(seconds=i)) for i in range(5000)]


def test_flows_iter_streams_what_flows_returns(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.record_flows(_flows())
    since = T0 + timedelta(seconds=1000)
    assert list(store.flows_iter(since)) == store.flows(since)
    assert len(list(store.flows_iter())) == len(store.flows()) == 700  # merged by key
    store.close()


def test_the_summary_walks_an_index_instead_of_sorting(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    store.record_flows(_flows())
    plans: list[str] = []

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "GROUP BY" in statement:
            plans.extend(" ".join(str(c) for c in row) for row in
                         store._db.execute("EXPLAIN QUERY PLAN " + statement))

    store._db.set_trace_callback(trace)
    got = store.flows_summary(lambda c: list(flowsummary.suggest_rows(c, T0, False)))
    questions = store.flows_summary(lambda c: list(flowsummary.questions(c, T0)))
    store._db.set_trace_callback(None)
    assert sum(r[4] for r in got) == sum(q[5] for q in questions) == 700
    assert any("COVERING INDEX flows_service" in p for p in plans), plans
    assert any("COVERING INDEX flows_question" in p for p in plans), plans
    assert not any("TEMP B-TREE FOR GROUP BY" in p for p in plans), plans
    store.close()
