"""The agent's feed scheduler against a real kernel: a changed feed reaches the set by itself.

`run_feed_scheduler` runs with a short sleep and a clock the test moves past the feed's minimum
interval; the HTTP server is on 127.0.0.1 in the test process, the sets in an ogt-<hex> namespace.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from outguard.engine import apply_policy
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
                state.path, netns=netns, stop=stop, on_round=on_round,
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
