"""The store's keyset pages (`store.pages`, `SQLiteStore.incidents_page`): every incident
exactly once, in order, whatever the page size and filter; a filter that matches few or none
walks a bounded number of rows per page and hands on a cursor; the walks use the indexes (no
sort, no scan of the table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from outguard.events import Incident
from outguard.store import Query
from outguard.store.pages import Cursor, PageQuery, page_sql
from outguard.store.sqlite import SQLiteStore
from tests.web.fixtures import T0, incident


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "events.db")
    # 60 incidents, pairs sharing a last_seen (ties), every 7th by java, every 3rd deny:tor
    s.write([incident(n, when=T0 + timedelta(seconds=n // 2),
                      process="/usr/bin/java" if n % 7 == 0 else "/usr/bin/curl",
                      rule="deny:tor" if n % 3 == 0 else "default",
                      severity="high" if n % 5 == 0 else "low") for n in range(60)])
    return s


def walk(store: SQLiteStore, **kw: object) -> tuple[list[str], int]:
    """Every id the pages give, following the cursors; and how many pages it took."""
    ids: list[str] = []
    before: Cursor | None = None
    pages = 0
    while True:
        got, before = store.incidents_page(PageQuery(before=before, **kw))  # type: ignore[arg-type]
        pages += 1
        ids += [i.id for i in got]
        if before is None:
            return ids, pages
        assert pages < 100


def newest_first(store: SQLiteStore, keep: Callable[[Incident], bool] = lambda i: True
                 ) -> list[str]:
    """The ids in page order, as one ORDER BY over the whole table gives them."""
    order = [r[0] for r in store._read("SELECT id FROM incidents ORDER BY last_seen DESC,"
                                       " rowid DESC", [])]
    found = {i.id: i for i in store.query(Query(limit=10_000))}
    return [i for i in order if keep(found[i])]


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
def test_pages_give_every_incident_once_in_order(store: SQLiteStore, limit: int) -> None:
    ids, _pages = walk(store, limit=limit)
    assert ids == newest_first(store)


@pytest.mark.parametrize("kw", [dict(process="java"), dict(rule="deny:tor"), dict(rule="tor"),
                                dict(min_severity="high"), dict(process="java", rule="deny:tor")])
def test_filtered_pages_with_a_small_walk_still_give_every_match(store: SQLiteStore,
                                                                 kw: dict) -> None:
    def keep(i: Incident) -> bool:
        return all((k != "process" or v in i.process)
                   and (k != "rule" or i.rule in (v, f"deny:{v}"))
                   and (k != "min_severity" or i.severity == "high") for k, v in kw.items())

    for scan in (3, 10, 1000):
        ids, _pages = walk(store, limit=4, scan=scan, **kw)
        assert ids == newest_first(store, keep), (kw, scan)


def test_a_filter_that_matches_nothing_walks_a_bounded_number_of_rows(store: SQLiteStore) -> None:
    got, nxt = store.incidents_page(PageQuery(process="no-such", scan=10))
    assert got == [] and nxt is not None  # a short page, and where to walk on from
    ids, pages = walk(store, process="no-such", scan=10)
    # 60 rows, 10 walked a page; the sixth walk ends on the last row, the seventh finds none
    assert ids == [] and pages == 7
    assert store.incidents_page(PageQuery(process="no-such"))[1] is None  # the whole table: done


def test_the_walks_use_the_indexes_and_never_sort(store: SQLiteStore) -> None:
    for q in (PageQuery(), PageQuery(before=Cursor(1.0, 5)), PageQuery(rule="deny:tor"),
              PageQuery(process="java", min_severity="high")):
        for floor in (None, Cursor(0.5, 3)):
            sql, args = page_sql(q, floor)
            plan = " ".join(r[3] for r in store._read(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "USING INDEX incidents_" in plan and "TEMP B-TREE" not in plan, plan
