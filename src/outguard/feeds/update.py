"""One update round for a set of feeds: fetch, parse, validate, keep the last good copy.

Place in the data flow: **fetch → parse → validate → store**, then `sync` puts what changed into
the kernel. A feed that fails or is refused keeps its last good copy and raises an alert; its
failure count drives the backoff (`schedule`). Network I/O through the httpx client passed in;
state through `FeedStore`; the clock is passed in.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from outguard.clock import Clock, system_clock
from outguard.events import FeedAlert
from outguard.feeds.fetch import ProgressHook, fetch
from outguard.feeds.merge import FeedSet
from outguard.feeds.parse import parse
from outguard.feeds.schedule import is_due, next_due
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.feeds.validate import NeverBlock, validate

Status = Literal["updated", "unchanged", "not-modified", "refused", "failed", "not-due"]


@dataclass
class FeedResult:
    name: str
    status: Status
    count: int = 0
    alerts: list[FeedAlert] = field(default_factory=list)
    next_due: float = 0.0
    body_at: float = 0.0  # time.perf_counter() when the body was in hand (0: none came)
    # the accepted content (what the stored copy now holds), for the sync to use as it is
    content: FeedSet | None = field(default=None, repr=False)
    # refused again for the very body refused last time: the agent does not alert again (a
    # broken `file:` feed is read every round, and would alert every few minutes)
    repeat: bool = False

    @property
    def ok(self) -> bool:
        return self.status not in ("refused", "failed")


async def update_feed(client: httpx.AsyncClient, spec: FeedSpec, store: FeedStore,
                      nb: NeverBlock, *, now: float, force: bool = False,
                      ignore_interval: bool = False,
                      progress: ProgressHook | None = None) -> FeedResult:
    meta = store.meta(spec.name)
    if not ignore_interval and not is_due(spec, meta, now):
        return FeedResult(spec.name, "not-due", meta.count, next_due=next_due(spec, meta))
    has_copy = store.has_copy(spec.name)
    got = await fetch(client, spec, meta, conditional=has_copy and not force, progress=progress)
    meta.attempted_at = now
    meta.source = spec.source
    if got.status == "not-modified":
        meta.fetched_at, meta.failures, meta.last_error = now, 0, None
        store.write_meta(spec.name, meta)
        return FeedResult(spec.name, "not-modified", meta.count, next_due=next_due(spec, meta))
    if got.status == "error":
        meta.failures += 1
        meta.last_error = got.error
        store.write_meta(spec.name, meta)
        alert = FeedAlert("error", spec.name, "fetch-failed",
                          f"fetch failed ({meta.failures} in a row), last good copy kept: {got.error}",
                          {"failures": meta.failures})
        return FeedResult(spec.name, "failed", meta.count, [alert], next_due(spec, meta))
    body_at = time.perf_counter()
    # parsing a million lines takes a second: keep the event loop (the agent) responsive
    parsed = await asyncio.to_thread(parse, got.body, spec.format)
    verdict = await asyncio.to_thread(validate, spec, got.body, parsed,
                                      meta.count if has_copy else None, nb, force=force)
    body_digest = hashlib.sha256(got.body).hexdigest()
    if verdict.content is None:
        repeat = meta.failures > 0 and meta.refused_digest == body_digest
        meta.failures += 1
        meta.last_error = "; ".join(a.message for a in verdict.alerts if a.severity == "error")
        meta.refused_at, meta.refusal, meta.refused_digest = now, verdict.reason, body_digest
        store.write_meta(spec.name, meta)
        return FeedResult(spec.name, "refused", meta.count, verdict.alerts, next_due(spec, meta),
                          repeat=repeat)
    meta.refused_digest = ""
    digest = await asyncio.to_thread(store.write_copy, spec.name, verdict.content)
    status: Status = "unchanged" if has_copy and digest == meta.digest else "updated"
    meta.digest, meta.count = digest, verdict.content.count
    meta.etag, meta.last_modified = got.etag, got.last_modified
    meta.fetched_at, meta.failures, meta.last_error = now, 0, None
    meta.bad_lines, meta.removed = parsed.bad, len(verdict.removed)
    meta.nb_digest, meta.kinds = nb.digest(), verdict.content.kinds
    store.write_meta(spec.name, meta)
    return FeedResult(spec.name, status, meta.count, verdict.alerts, next_due(spec, meta), body_at,
                      verdict.content)


async def update_feeds(specs: Sequence[FeedSpec], store: FeedStore, nb: NeverBlock, *,
                       client: httpx.AsyncClient | None = None,
                       clock: Clock = system_clock, force: bool = False,
                       ignore_interval: bool = False,
                       progress: ProgressHook | None = None) -> list[FeedResult]:
    """Update every feed concurrently; one result per feed, in order."""
    from outguard.feeds.fetch import make_client  # noqa: PLC0415

    own = client is None
    http = make_client() if client is None else client
    try:
        return list(await asyncio.gather(*(
            update_feed(http, spec, store, nb, now=clock(), force=force,
                        ignore_interval=ignore_interval, progress=progress) for spec in specs)))
    finally:
        if own:
            await http.aclose()
