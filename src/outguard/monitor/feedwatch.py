"""The agent's threat feeds: scheduled updates, and which feed holds a blocked destination.

Place in the data flow: `runner.run_agent` starts it when the policy refers to `@feed:` lists.
It runs `feeds.scheduler.run_feed_scheduler` (fetch → validate → sync deltas into the kernel
sets) on the agent's loop, turns refused updates and other feed alerts into alerts for the
policy's sinks, and answers `feed_of(destination)` for `Agent`: the NFLOG prefix names the deny
rule (`og:deny:threat-intel`), this adds which feed and category listed the address. The index
is rebuilt from the policy's last good copies after every round that synced something.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from outguard.errors import OutguardError
from outguard.feeds.alert import FeedAlert
from outguard.feeds.lookup import FeedIndex
from outguard.feeds.policy import PREFIX
from outguard.monitor.metrics import FeedFreshness
from outguard.policy.load import Policy

log = logging.getLogger("outguard.monitor")

_SEVERITY = {"error": "high", "warning": "medium", "info": "info"}


def feed_alert_json(alert: FeedAlert, host: str | None = None) -> dict[str, Any]:
    """A feed alert in the shape the alert sinks take (they read `severity` and `title`)."""
    return {"type": "outguard.feed", "host": host, "severity": _SEVERITY.get(alert.severity, "info"),
            "title": f"feed {alert.feed}: {alert.message}", "signature": f"feed-{alert.kind}",
            "feed": alert.feed, "kind": alert.kind, "details": alert.details}


class FeedWatch:
    def __init__(self, policy: Path, state_dir: Path, netns: str | None,
                 publish: Callable[[dict[str, Any]], None]) -> None:
        self.policy, self.state_dir, self.netns, self.publish = policy, state_dir, netns, publish
        self.index = FeedIndex([])
        self.feeds: list[str] = []  # the policy's feeds, by name
        self.rounds = 0

    def load_index(self) -> bool:
        """Rebuild the index from the policy file (after a round synced new feed content)."""
        from outguard.policy.load import load_policy  # noqa: PLC0415

        return self.index_from(load_policy(self.policy, feed_dir=self.state_dir / "feeds"))

    def index_from(self, policy: Policy) -> bool:
        """Build the index from a loaded policy's feeds; False when the policy names none."""
        self.index = FeedIndex.of_policy(policy)
        self.feeds = [name[len(PREFIX):] for name in policy.lists if name.startswith(PREFIX)]
        return bool(self.feeds)

    def freshness(self) -> list[FeedFreshness]:
        """Per feed of the policy: when its copy was last confirmed good, failures since (the
        feeds' records in the state directory, read at each metrics scrape)."""
        from outguard.feeds.store import FeedStore  # noqa: PLC0415

        store = FeedStore(self.state_dir / "feeds")
        out = []
        for name in self.feeds:
            try:
                meta = store.meta(name)
            except OutguardError as exc:  # an unreadable record: say so, report the rest
                log.warning("feed %s: %s", name, exc)
                continue
            out.append(FeedFreshness(name, meta.fetched_at, meta.failures))
        return out

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
            except OutguardError as exc:  # e.g. the policy file was edited: keep the old index
                log.warning("feed index not rebuilt: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        from outguard.feeds.scheduler import run_feed_scheduler  # noqa: PLC0415

        await run_feed_scheduler(self.state_dir, netns=self.netns, stop=stop,
                                 on_alert=self._alert, on_round=self._round)
