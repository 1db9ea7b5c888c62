"""The agent's threat feeds: scheduled updates, and which feed holds a blocked destination.

Place in the data flow: `service.live` starts it when the policy refers to `@feed:` lists, and
restarts or halts it when a reload brings a policy with other feeds or none. It runs
`feeds.scheduler.run_feed_scheduler` (fetch → validate → sync deltas into the kernel sets) on
the agent's loop, turns refused updates and other feed alerts into alerts for the policy's
sinks, and answers `feed_of(destination)` for `Agent`: the NFLOG prefix names the deny rule
(`og:deny:threat-intel`), this adds which feed and category listed the address. The index is
rebuilt from the applied policy's last good copies after every round that synced something,
and replaced by a reload.
`freshness()` gives each of those feeds' age and last refusal (`feeds.freshness`) for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from outguard.errors import OutguardError
from outguard.events import FeedAlert
from outguard.feeds.freshness import FeedFreshness, freshness
from outguard.feeds.lookup import FeedIndex
from outguard.policy.loaded import Policy

log = logging.getLogger("outguard.monitor")

_SEVERITY = {"error": "high", "warning": "medium", "info": "info"}


def feed_alert_json(alert: FeedAlert, host: str | None = None) -> dict[str, Any]:
    """A feed alert in the shape the alert sinks take (they read `severity` and `title`)."""
    return {"type": "outguard.feed", "host": host, "severity": _SEVERITY.get(alert.severity, "info"),
            "title": f"feed {alert.feed}: {alert.message}", "signature": f"feed-{alert.kind}",
            "feed": alert.feed, "kind": alert.kind, "details": alert.details}


class FeedWatch:
    """`load` gives the policy the feeds come from now (the applied one), for the index."""

    def __init__(self, load: Callable[[], Policy | None], state_dir: Path, netns: str | None,
                 publish: Callable[[dict[str, Any]], None], *, min_sleep: float = 5.0) -> None:
        self.load, self.state_dir, self.netns, self.publish = load, state_dir, netns, publish
        self.min_sleep = min_sleep
        self.index = FeedIndex([])
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def load_index(self) -> None:
        """Rebuild the index from the policy (after a round synced new feed content)."""
        policy = self.load()
        self.index = FeedIndex.of_policy(policy) if policy is not None else FeedIndex([])

    def freshness(self, now: float | None = None) -> list[FeedFreshness]:
        """Age of each feed's last good copy and its last refusal (for metrics): the feeds of
        the policy the index was last built from."""
        return freshness(self.state_dir, [spec.name for spec, _content in self.index.feeds],
                         now=now)

    def feed_of(self, destination: str) -> str | None:
        hits = self.index.lookup(destination)
        return ", ".join(f"{h.feed} ({h.category})" for h in hits) if hits else None

    def _alert(self, alert: FeedAlert) -> None:
        self.publish(feed_alert_json(alert))

    def _round(self, results: Sequence[object], report: object | None) -> None:
        self.rounds += 1
        if report is not None:
            try:
                self.load_index()
            except OutguardError as exc:  # e.g. a list file went away: keep the old index
                log.warning("feed index not rebuilt: %s", exc)

    def start(self) -> None:
        """(Re)start the schedule with a round at once, so that feeds a new policy names are
        fetched now (each round reads the applied policy: feeds it no longer names are not
        updated any more). A round in progress finishes first."""
        previous = self._task
        self.halt()
        stop = self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(previous, stop),
                                                            name="outguard-feeds")

    def halt(self) -> None:
        """No more rounds (the one in progress finishes)."""
        if self._stop is not None:
            self._stop.set()

    async def _run(self, previous: asyncio.Task[None] | None, stop: asyncio.Event) -> None:
        from outguard.apply.run import feed_host  # noqa: PLC0415
        from outguard.feeds.scheduler import run_feed_scheduler  # noqa: PLC0415

        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        if not stop.is_set():
            await run_feed_scheduler(self.state_dir, feed_host(self.netns), stop=stop,
                                     on_alert=self._alert, on_round=self._round,
                                     min_sleep=self.min_sleep)

    async def close(self) -> None:
        self.halt()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
