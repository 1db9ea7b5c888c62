"""Kernel set writes for the resolver, batched: the agent's side of "the set holds the address
before the answer leaves".

Place in the data flow: the resolver process asks the agent (`dns.supervisor`) to put an
answer's addresses into the rules' FQDN sets and waits for the reply; writes that arrive while a
libnftables transaction runs go together into the next one (`kernel.fqdnsets`, on one worker
thread: an `nft_ctx` is not thread-safe). When a batch fails, each answer is retried alone, so
one bad write fails only its own answer (SERVFAIL), never its neighbours'.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from outguard.dns.cache import SetItem
from outguard.errors import KernelError
from outguard.kernel.fqdnsets import FqdnSets


class SetWriter:
    """Batches concurrent set writes into one transaction on a worker thread."""

    def __init__(self, sets: FqdnSets) -> None:
        self.sets = sets
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="og-dns-sets")
        self.pending: list[tuple[list[SetItem], asyncio.Future[None]]] = []
        self.flushing = False

    async def write(self, items: list[SetItem]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((items, fut))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                groups = [batch] if len(batch) == 1 else [batch, *([b] for b in batch)]
                for group in groups:
                    if all(f.done() for _i, f in group):
                        continue
                    items = [i for its, _f in group for i in its]
                    try:
                        await loop.run_in_executor(self.pool, self.sets.write, items)
                    except KernelError as exc:
                        if len(group) == 1:  # retried alone: this answer's own failure
                            group[0][1].set_exception(exc)
                        continue  # a batch failed: retry each answer alone (next group)
                    for _i, fut in group:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self.flushing = False

    def close(self) -> None:
        self.pool.shutdown(wait=True)
