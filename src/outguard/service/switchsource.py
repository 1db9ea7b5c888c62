"""The agent's NFLOG source, movable to another group while the agent runs.

Place in the data flow: kernel NFLOG (`kernel.nflog.NflogSource`, one per group) → **here** →
`monitor.agent.Agent`. A reload whose policy names another `options.nflog_group` binds the new
group first (`bind`: a failure leaves the running source alone), then `switch` hands the
agent's reader over to it and lets the old group go. Each source is read by a pump task of
its own into one queue, so the agent's `async for` never notices the change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from outguard.events import BlockedPacket
from outguard.monitor.agent import PacketSource

_END = object()


class SwitchSource:
    def __init__(self, make: Callable[[int], PacketSource], group: int) -> None:
        self._make = make
        self.group = group
        self.current = make(group)
        self._queue: asyncio.Queue[Any] | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def stats(self) -> Any:
        """The current source's counters (they start again from zero after a switch)."""
        return getattr(self.current, "stats", None)

    def open(self) -> None:
        _open(self.current)

    def bind(self, group: int) -> PacketSource:
        """A source bound to `group`, not yet read (raises what binding raises)."""
        source = self._make(group)
        try:
            _open(source)
        except BaseException:
            _close(source)
            raise
        return source

    def switch(self, source: PacketSource, group: int) -> None:
        """Read `source` from now on; the old one is closed once its pump has stopped."""
        old, old_pump = self.current, self._pump
        self.current, self.group = source, group
        if self._queue is not None:
            self._pump = asyncio.get_running_loop().create_task(self._run(source, self._queue))
        if old_pump is not None:
            old_pump.cancel()
            old_pump.add_done_callback(lambda _t: _close(old))
        else:
            _close(old)

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        _close(self.current)

    async def _run(self, source: PacketSource, queue: asyncio.Queue[Any]) -> None:
        try:
            async for batch in source:
                await queue.put(batch)
            if source is self.current:
                await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the agent re-raises what ended its source
            if source is self.current:
                await queue.put(exc)

    async def _batches(self) -> AsyncIterator[list[BlockedPacket]]:
        queue: asyncio.Queue[Any] = asyncio.Queue(64)
        self._queue = queue
        self._pump = asyncio.get_running_loop().create_task(self._run(self.current, queue))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump

    def __aiter__(self) -> AsyncIterator[list[BlockedPacket]]:
        return self._batches()


def _open(source: object) -> None:
    opener = getattr(source, "open", None)
    if callable(opener):
        opener()


def _close(source: object) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        closer()
