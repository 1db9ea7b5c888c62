"""Kernel set writes for the resolver, batched: the agent's side of "the set holds the address
before the answer leaves".

Place in the data flow: the resolver process asks the agent (`dns.supervisor`) to put an
answer's addresses into the rules' FQDN sets and waits for the reply; writes that arrive while a
libnftables transaction runs go together into the next one (`kernel.fqdnsets`, on one worker
thread: an `nft_ctx` is not thread-safe). When a batch fails, each answer is retried alone, so
one bad write fails only its own answer (SERVFAIL), never its neighbours'.

Every write is settled, whatever happens: an answer whose write never ends would hold its
client until the resolver's own timeout, and the agent's count of writes in progress would
never fall. A failure that is not the kernel's refusal (a bug, the worker pool shut down, the
flush cancelled) and `close` fail what is left with a KernelError, which the supervisor turns
into a SERVFAIL.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from outguard.dns.cache import SetItem
from outguard.errors import KernelError
from outguard.kernel.fqdnsets import FqdnSets

log = logging.getLogger("outguard.dns")
_Pending = list[tuple[list[SetItem], asyncio.Future[bool]]]


def _fail(batch: _Pending, exc: KernelError) -> None:
    for _items, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


class SetWriter:
    """Batches concurrent set writes into one transaction on a worker thread."""

    def __init__(self, sets: FqdnSets) -> None:
        self.sets = sets
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="og-dns-sets")
        self.pending: _Pending = []
        self.flushing = False
        self.closed = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one

    async def write(self, items: list[SetItem]) -> bool:
        """Put `items` into the kernel's sets; returns once committed (True), or skipped because
        no table of ours exists (False, `FqdnSets.write`); KernelError if refused."""
        if self.closed:
            raise KernelError("the DNS set writer is closed")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((items, fut))
        if not self.flushing:
            self.flushing = True
            self._task = asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        batch: _Pending = []
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await self._write_batch(batch)
        except Exception as exc:  # not the kernel's refusal: fail what waits, never strand it
            log.error("the DNS set writer failed: %r", exc)
            _fail(batch + self.pending, KernelError(f"cannot write the DNS sets: {exc!r}"))
            self.pending = []
        finally:
            # cancelled (the loop stops): what waits gets an answer too
            _fail(batch + self.pending, KernelError("the DNS set writer stopped"))
            self.pending = []
            self.flushing = False

    async def _write_batch(self, batch: _Pending) -> None:
        loop = asyncio.get_running_loop()
        groups = [batch] if len(batch) == 1 else [batch, *([b] for b in batch)]
        for group in groups:
            if all(f.done() for _i, f in group):
                continue
            items = [i for its, _f in group for i in its]
            try:
                held = await loop.run_in_executor(self.pool, self.sets.write, items)
            except KernelError as exc:
                if len(group) == 1:  # retried alone: this answer's own failure
                    _fail(group, exc)
                continue  # a batch failed: retry each answer alone (next group)
            for _i, fut in group:
                if not fut.done():
                    fut.set_result(held)

    def close(self) -> None:
        """Fail the writes still queued, let the one in the kernel finish, stop the thread."""
        self.closed = True
        _fail(self.pending, KernelError("the DNS set writer is closed"))
        self.pending = []
        self.pool.shutdown(wait=True)
