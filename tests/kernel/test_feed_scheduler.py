"""The agent's feed scheduler against a real kernel: a changed feed reaches the set by itself.

`run_feed_scheduler` runs with a short sleep and a clock the test moves past the feed's minimum
interval; the HTTP server is on 127.0.0.1 in the test process, the sets in an ogt-<hex> namespace.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from outguard.apply.run import apply_policy, feed_host
from outguard.events import FeedAlert
from outguard.feeds.scheduler import run_feed_scheduler
from outguard.feeds.sync import SyncReport
from outguard.feeds.update import FeedResult
from outguard.kernel.libnft import Nft
from outguard.state import StateDir
from tests.feeds.test_fetch import Server
from tests.kernel.test_feed_sync import POLICY, flat, kernel_sets

pytestmark = pytest.mark.kernel

V1 = "".join(f"198.51.100.{i}\n" for i in range(1, 21)) + "203.0.113.0/25\n"
V2 = V1.replace("198.51.100.3\n", "198.51.100.99\n").replace("203.0.113.0/25\n", "203.0.113.0/26\n")


def test_scheduler_brings_a_change_to_the_kernel(netns: str, tmp_path: Path) -> None:
    server = Server()
    try:
        server.body = V1.encode()
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(url=server.url))
        state = StateDir(tmp_path / "state")
        with Nft(netns) as nft:
            apply_policy(policy, state, nft, resolver=lambda _n: [])
        offset = [0.0]
        rounds: list[tuple[list[FeedResult], SyncReport | None]] = []
        seen: list[set[str]] = []

        def on_round(results: list[FeedResult], report: SyncReport | None) -> None:
            rounds.append((results, report))
            seen.append(flat(kernel_sets(netns)))
            if len(rounds) == 1:  # the first load is in: publish a change, move past min_interval
                server.body, server.etag = V2.encode(), '"v2"'
                offset[0] += 3600
            if len(rounds) >= 3:
                stop.set()

        stop = asyncio.Event()

        async def main() -> None:
            await asyncio.wait_for(run_feed_scheduler(
                state.path, feed_host(netns), stop=stop, on_round=on_round,
                clock=lambda: time.time() + offset[0], min_sleep=0.05, max_sleep=0.2), 60)

        asyncio.run(main())
        first = {f"198.51.100.{i}" for i in range(1, 21)} | {"203.0.113.0/25"}
        assert rounds[0][0][0].status == "updated" and seen[0] == first
        assert rounds[1][0][0].status == "updated"
        assert rounds[1][1] is not None and rounds[1][1].changed == {"corp-bad": (2, 2)}
        assert seen[1] == (first - {"198.51.100.3", "203.0.113.0/25"}) | {"198.51.100.99",
                                                                           "203.0.113.0/26"}
        assert rounds[2][0][0].status == "not-due"  # min_interval holds between rounds
        assert seen[2] == seen[1]
    finally:
        server.close()


def test_a_broken_file_feed_is_alerted_once_not_every_round(netns: str, tmp_path: Path) -> None:
    """A `file:` feed is read every round (no interval): a refused file alerted every few
    minutes until fixed. Now once per refused content, and again when the content changes."""
    listing = tmp_path / "bad.txt"
    listing.write_text("198.51.100.1\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: 1\ndeny:\n  - name: t\n    to: ["@feed:local-bad"]\n'
                      'feeds:\n  local-bad: {file: bad.txt}\n')
    state = StateDir(tmp_path / "state")
    with Nft(netns) as nft:
        apply_policy(policy, state, nft, resolver=lambda _n: [])
    listing.write_text("<html><title>oops</title></html>\n")
    alerts: list[FeedAlert] = []
    rounds: list[list[FeedResult]] = []
    stop = asyncio.Event()

    def on_round(results: list[FeedResult], _report: SyncReport | None) -> None:
        rounds.append(results)
        if len(rounds) == 3:
            listing.write_text("0.0.0.0/0\n")
        if len(rounds) >= 5:
            stop.set()

    async def main() -> None:
        await asyncio.wait_for(run_feed_scheduler(
            state.path, feed_host(netns), stop=stop, on_round=on_round, on_alert=alerts.append,
            min_sleep=0.05, max_sleep=0.1), 60)

    asyncio.run(main())
    assert [r[0].status for r in rounds] == ["refused"] * 5
    refusals = [a for a in alerts if a.kind == "refused"]
    assert [a.details["reason"] for a in refusals] == ["error-page", "too-wide"]
    assert flat(kernel_sets(netns)) == {"198.51.100.1"}  # the last good set stays


def test_a_failing_round_is_alerted_once_not_only_logged(netns: str, tmp_path: Path) -> None:
    """When the applied policy no longer loads (its allow list file is gone), no feed can be
    updated: that was a log line every round; now one alert, and the sets stay."""
    (tmp_path / "bad.txt").write_text("198.51.100.1\n")
    (tmp_path / "partners.txt").write_text("203.0.113.7\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: 1\ndeny:\n  - name: t\n    to: ["@feed:local-bad"]\n'
                      'allow:\n  - name: p\n    to: ["@partners"]\n'
                      'lists:\n  partners: {file: partners.txt}\n'
                      'feeds:\n  local-bad: {file: bad.txt}\n')
    state = StateDir(tmp_path / "state")
    with Nft(netns) as nft:
        apply_policy(policy, state, nft, resolver=lambda _n: [])
    (tmp_path / "partners.txt").unlink()
    alerts: list[FeedAlert] = []
    rounds = [0]
    stop = asyncio.Event()

    def on_round(_results: list[FeedResult], _report: SyncReport | None) -> None:
        rounds[0] += 1
        if rounds[0] >= 3:
            stop.set()

    async def main() -> None:
        await asyncio.wait_for(run_feed_scheduler(
            state.path, feed_host(netns), stop=stop, on_round=on_round, on_alert=alerts.append,
            min_sleep=0.05, max_sleep=0.1), 60)

    asyncio.run(main())
    assert [a.kind for a in alerts] == ["round-failed"]
    assert "lists.partners.file" in alerts[0].message and alerts[0].severity == "error"
    assert flat(kernel_sets(netns)) == {"198.51.100.1"}
