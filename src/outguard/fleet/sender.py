"""The sender: drains the fleet outbox to the server in batches, and retries what did not go.

Place in the data flow: `fleet.outbox.Outbox` → **Sender** (one per kind: incidents, flows) →
`fleet.client.FleetClient.post_items` → POST /v1/incidents | /v1/flows → `Outbox.ack`.

At-least-once: a batch is acked only after the server's 200, so an answer lost on the way makes
the batch go again, and the server's upsert by (host, id) counts it as duplicates, never as new
rows. What does not go:
- no connection, a timeout, a 5xx: the same batch again after an exponential backoff with full
  jitter (`backoff`), so that a fleet of agents coming back after an outage spreads out;
- 429: after the server's Retry-After;
- 400/413/422 (the body itself is refused): the batch is halved until the item that the server
  refuses is alone, which is then rejected (counted in the outbox's books, never sent again);
  the others go on;
- 401/403: the credential; the outbox keeps everything and the sender backs off (an alert
  says so, `on_trouble`).
The outbox keeps every item until it is acked: a stopped agent sends the rest at its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from outguard.fleet import wire
from outguard.fleet.client import FleetError, RefusedError, ThrottledError
from outguard.fleet.outbox import Item, Outbox, OutboxError

log = logging.getLogger("outguard.fleet")
Post = Callable[[str, list[wire.Item]], Awaitable[wire.BatchResponse]]
BATCH = 500
BASE_S, CAP_S = 0.25, 10.0  # the backoff: 0.25 s doubling, at most 10 s
IDLE_S = 0.2  # how often an empty outbox is looked at


def backoff(attempt: int, rng: random.Random, *, base: float = BASE_S,
            cap: float = CAP_S) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return rng.uniform(0.0, min(cap, base * (2.0 ** min(attempt, 30))))


@dataclass
class SenderStats:
    posts: int = 0  # batches the server took
    failures: int = 0  # posts that did not go through (retried)
    accepted: int = 0  # rows new to the server
    duplicates: int = 0  # rows the server had already (a batch sent again)
    attempt: int = 0  # consecutive failures now (0: the last post went through)
    last_error: str | None = None
    last_ok: float = 0.0  # unix time of the last accepted post
    outbox_errors: int = 0  # the outbox could not be read or written


class Sender:
    def __init__(self, outbox: Outbox, kind: str, post: Post, *, batch: int = BATCH,
                 base: float = BASE_S, cap: float = CAP_S, idle: float = IDLE_S,
                 rng: random.Random | None = None,
                 on_trouble: Callable[[str], None] | None = None) -> None:
        self.outbox, self.kind, self.post = outbox, kind, post
        self.batch = max(1, min(batch, wire.MAX_BATCH))
        self.base, self.cap, self.idle = base, cap, idle
        self.rng = rng or random.Random()
        self.on_trouble = on_trouble
        self.stats = SenderStats()
        self._size = self.batch  # smaller while a refused item is being isolated

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: send what waits, wait when nothing does or after a failure."""
        while not stop.is_set():
            try:
                pause = await self.step()
            except OutboxError as exc:  # the disk: the monitor's store reports it too
                self.stats.outbox_errors += 1
                if self.stats.outbox_errors == 1:
                    log.error("fleet: %s; the sender tries again", exc)
                pause = self.cap
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def drain(self, timeout: float) -> bool:
        """Send until the outbox is empty or `timeout` passes (an agent that stops); True if
        nothing waits. No backoff beyond the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pause = await self.step()
            if pause == 0:
                continue
            if self.outbox.books(self.kind).pending == 0:
                return True
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        return self.outbox.books(self.kind).pending == 0

    async def step(self) -> float:
        """One batch; how long to wait before the next (0: go on at once)."""
        items = await asyncio.to_thread(self.outbox.take, self.kind, self._size)
        if not items:
            return self.idle
        wired, bad = _wire_items(items)
        if bad:  # cannot even be put on the wire: nothing the server could do with them
            await asyncio.to_thread(self.outbox.reject, self.kind, bad)
            log.error("fleet: %d %s item(s) are not valid on the wire: rejected", len(bad),
                      self.kind)
            if not wired:
                return 0.0
        try:
            got = await self.post(self.kind, [w for _seq, w in wired])
        except ThrottledError as exc:
            self._failed(str(exc))
            return exc.retry_after + self.rng.uniform(0, 0.5)
        except RefusedError as exc:
            return await self._refused(exc, [seq for seq, _w in wired])
        except FleetError as exc:
            self._failed(str(exc))
            return backoff(self.stats.attempt - 1, self.rng, base=self.base, cap=self.cap)
        await asyncio.to_thread(self.outbox.ack, self.kind, [seq for seq, _w in wired])
        self._ok(got)
        return 0.0

    def _ok(self, got: wire.BatchResponse) -> None:
        s = self.stats
        if s.attempt:
            log.info("fleet: %s go through again after %d failed post(s)", self.kind, s.attempt)
        s.posts += 1
        s.accepted += got.accepted
        s.duplicates += got.duplicates
        s.attempt, s.last_error, s.last_ok = 0, None, time.time()
        self._size = min(self.batch, self._size * 2)  # back up after an isolated refusal

    def _failed(self, message: str) -> None:
        s = self.stats
        s.failures += 1
        s.attempt += 1
        if s.attempt == 1 or message != s.last_error:
            log.warning("fleet: posting %s failed (%s); the outbox keeps them", self.kind,
                        message)
        s.last_error = message

    async def _refused(self, exc: RefusedError, seqs: list[int]) -> float:
        if exc.status not in (400, 413, 422):  # 401/403/404...: not the items' fault
            first = self.stats.attempt == 0
            self._failed(str(exc))
            if first and self.on_trouble is not None:
                self.on_trouble(f"the fleet server refuses this host's {self.kind}: {exc}")
            return backoff(self.stats.attempt - 1, self.rng, base=self.base, cap=self.cap)
        if len(seqs) > 1:
            self._size = max(1, len(seqs) // 2)  # find the item the server refuses
            return 0.0
        await asyncio.to_thread(self.outbox.reject, self.kind, seqs)
        log.error("fleet: the server refuses one of the %s (%s): rejected, not sent again",
                  self.kind, exc)
        return 0.0


def _wire_items(items: list[Item]) -> tuple[list[tuple[int, wire.Item]], list[int]]:
    out, bad = [], []
    for it in items:
        try:
            out.append((it.seq, wire.Item(id=it.id, ts=it.ts, record=it.record)))
        except ValidationError:
            bad.append(it.seq)
    return out, bad
