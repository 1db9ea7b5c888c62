"""The dashboard's other pages over real data: the overview's pending confirmation and
lockdown (the state directory's own files), top, feeds, DNS (refused names as stored by the
resolver's incidents), learned flows with the suggestion beside the applied policy; the sampler
and the charts, whose labels are escaped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from outguard.events import LearnedFlow
from outguard.feeds.freshness import FeedFreshness
from outguard.state import Pending, StateDir
from outguard.store.sqlite import SQLiteStore
from outguard.web.pages import bars, sparkline
from outguard.web.sources import Sampler
from tests.web.fixtures import XSS, app_for, incident, store_with


def _client(state: Path, **kw: object) -> TestClient:
    app, keys = app_for(state, **kw)
    return TestClient(app, headers={"authorization": f"Bearer {keys.token}"})


def test_overview_shows_a_pending_confirmation_and_a_lockdown(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.set_pending(Pending(token="t", deadline=time.time() + 55, watchdog_pid=1,
                              policy_hash="ab" * 32))
    state.set_lockdown({"until": int(time.time()) + 3600, "keep": ["ssh"]})
    page = _client(tmp_path).get("/").text
    assert "policy abababababab: " in page and "s left" in page
    assert 'id="lockdown">until' in page
    # a lockdown the kernel does not hold is a problem the page says
    assert "PROBLEM:" in page


def test_top_draws_both_charts(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store_with(tmp_path / "events.db", [
        incident(1, when=now, process=f"/opt/{XSS}", count=7),
        incident(2, when=now, process="/usr/bin/java", dst="198.51.100.7", count=3),
        incident(3, when=now - timedelta(days=3), process="/usr/bin/old", count=100)])
    c = _client(tmp_path)
    page = c.get("/top?window=24h").text
    assert page.count("<svg class=\"bars\"") == 2
    assert "/usr/bin/java" in page and "/usr/bin/old" not in page
    assert XSS not in page and "&lt;script&gt;" in page
    assert "/usr/bin/old" in c.get("/top?window=7d").text


def test_feeds_page_lists_sizes_and_refusals(tmp_path: Path) -> None:
    feed = FeedFreshness("spamhaus-drop", True, 1234, 1_767_000_000.0, 60.0, 1_767_000_100.0,
                         2, "HTTP 503", 1_766_000_000.0, "shrink")
    page = _client(tmp_path, feeds=lambda: [feed]).get("/feeds").text
    assert "spamhaus-drop" in page and "1234" in page and "HTTP 503" in page
    assert "(shrink)" in page
    assert "names no" in _client(tmp_path).get("/feeds").text


def test_dns_page_lists_refused_names_only(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store_with(tmp_path / "events.db", [
        incident(1, when=now, dst=f"evil{XSS}.example", dport=53, rule="dns:unlisted",
                 proto="dns", count=4),
        incident(2, when=now, dst="203.0.113.5", rule="default")])
    page = _client(tmp_path).get("/dns").text
    assert "dns:unlisted" in page and "203.0.113.5" not in page
    assert XSS not in page and "evil&lt;script&gt;" in page


def test_learned_page_shows_the_suggestion_beside_the_applied_policy(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = SQLiteStore(tmp_path / "events.db")
    store.record_flows([LearnedFlow(
        exe="/usr/bin/curl", cmdline=("curl",), user="root", uid=0, unit="backup.service",
        cgroup="/system.slice/backup.service", container=None, dst="198.51.100.20", port=443,
        proto="tcp", names=("backup.example.com",), count=3, first_seen=now, last_seen=now)])
    store.close()
    page = _client(tmp_path).get("/learned").text
    assert 'id="suggested"' in page and "backup.example.com" in page
    assert "no policy is applied" in page
    assert "backup.service" in page


def test_sampler_series_are_per_interval_and_reset_safe() -> None:
    values = iter([{"deny:x": 0}, {"deny:x": 5}, {"deny:x": 5}, {"deny:x": 2}, {"deny:x": 9}])
    sampler = Sampler(lambda: next(values), every=1.0, span=10.0)
    for t in range(5):
        sampler.sample(now=float(t))
    assert sampler.series("deny:x") == [5, 0, 0, 7]  # a counter reset counts 0, not -3
    assert sampler.series("other") == [0, 0, 0, 0]


def test_charts_escape_their_labels() -> None:
    assert XSS not in sparkline([1, 2], label=XSS)
    chart = bars([(XSS, 3), ("b", 1)])
    assert XSS not in chart and "&lt;script&gt;" in chart
    assert "nothing blocked" in bars([])


def test_live_filters_match_what_the_pages_filter() -> None:
    from outguard.web.incidents import Filters

    inc = incident(1, rule="deny:tor", severity="high", process="/usr/bin/java")
    assert Filters.of({"severity": "medium", "rule": "tor", "process": "java"}).matches(inc)
    assert Filters.of({"rule": "deny:tor"}).matches(inc)
    assert not Filters.of({"severity": "critical"}).matches(inc)
    assert not Filters.of({"rule": "allow:tor"}).matches(inc)
    assert not Filters.of({"process": "python"}).matches(inc)
    assert Filters.of({"severity": "bogus", "rule": " ", "process": ""}) == Filters()


def test_overview_api_is_the_status_json(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.set_pending(Pending(token="t", deadline=time.time() + 55, watchdog_pid=1,
                              policy_hash="ab" * 32))
    got = _client(tmp_path).get("/api/overview").json()
    assert got["pending_confirmation"]["policy_hash"] == "ab" * 32
    assert got["mode"] is None and "counters" in got


def test_the_live_feed_sends_new_incidents_and_says_when_it_cannot_keep_up(
        tmp_path: Path) -> None:
    import asyncio

    from outguard.web.incidents import BURST, Filters, stream
    from outguard.web.sources import Sources

    store_with(tmp_path / "events.db", [incident(0, when=datetime.now(UTC) - timedelta(1))])
    sources = Sources(state_dir=tmp_path, store_path=tmp_path / "events.db")

    async def first_events(count: int, n: int) -> list[str]:
        stop = asyncio.Event()
        events = stream(sources, Filters(), stop, poll=0.05)
        assert (await anext(events)).startswith("retry:")
        later = datetime.now(UTC) + timedelta(seconds=1)
        store_with(tmp_path / "events.db", [incident(1000 + i, when=later) for i in range(count)])
        got = [await anext(events) for _ in range(n)]
        stop.set()
        await events.aclose()
        return got

    few = asyncio.run(first_events(2, 2))
    assert all(e.startswith("event: incident\n") for e in few)
    assert "inc-0000000" not in "".join(few)  # what was there before the page opened is not sent
    many = asyncio.run(first_events(BURST + 50, 1))
    assert many == ["event: gap\ndata: {}\n\n"]
    sources.close()


def test_the_incidents_page_links_to_older_ones_keeping_its_filters(tmp_path: Path) -> None:
    import re

    store_with(tmp_path / "events.db", [incident(n, process="/usr/bin/java" if n % 2 else
                                                 "/usr/bin/curl") for n in range(130)])
    c = _client(tmp_path)
    seen: list[str] = []
    url = "/incidents?process=java"
    while url:
        page = c.get(url.replace("&amp;", "&")).text
        seen += re.findall(r'<tr data-id="(inc-\d+)"', page)
        older = re.search(r'id="older" href="([^"]+)"', page)
        url = older.group(1) if older else ""
        assert not older or "process=java" in url
    assert seen == [f"inc-{n:07d}" for n in range(129, 0, -2)]
