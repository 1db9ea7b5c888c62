"""dns.setwriter: every write is settled — committed, refused, or failed when the writer breaks
or closes — so no DNS answer waits for a set write forever.

The kernel here is a stand-in that fails on purpose (the failures a real libnftables context
cannot be made to show on demand); tests/kernel/test_dns.py writes real sets."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from outguard.dns.setwriter import SetWriter
from outguard.errors import KernelError
from outguard.kernel.fqdnsets import FqdnSets

ITEM = [("f4_web", "192.0.2.1", 60)]
BAD = [("f4_gone", "192.0.2.2", 60)]


class Kernel:
    """Commits everything, refuses a batch naming `f4_gone`, raises `crash` when given one, and
    holds each call until `gate` is set."""

    def __init__(self, crash: BaseException | None = None) -> None:
        self.crash = crash
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def run_json(self, doc: Any) -> Any:
        self.calls += 1
        self.gate.wait(10)
        if self.crash is not None:
            raise self.crash
        if "f4_gone" in repr(doc):
            raise KernelError("no such set f4_gone")
        return {}


async def _settled(*aws: Any) -> list[Any]:
    async with asyncio.timeout(5):  # a write that never settles fails here, not hangs
        return await asyncio.gather(*aws, return_exceptions=True)


def test_a_refused_write_fails_alone() -> None:
    async def main() -> list[Any]:
        writer = SetWriter(FqdnSets(Kernel()))
        try:
            return await _settled(writer.write(ITEM), writer.write(BAD), writer.write(ITEM))
        finally:
            writer.close()

    ok, bad, ok2 = asyncio.run(main())
    assert ok is True and ok2 is True  # committed (False: no table to hold them)
    assert isinstance(bad, KernelError)


@pytest.mark.parametrize("crash", [ValueError("not JSON"), RuntimeError("pool is gone")])
def test_a_failure_that_is_not_the_kernels_settles_every_write(crash: Exception) -> None:
    """The flush task died with the exception; every write of the batch waited forever."""
    async def main() -> list[Any]:
        writer = SetWriter(FqdnSets(Kernel(crash)))
        try:
            return await _settled(writer.write(ITEM), writer.write(ITEM))
        finally:
            writer.close()

    results = asyncio.run(main())
    assert all(isinstance(r, KernelError) for r in results), results
    assert all(repr(crash) in str(r) for r in results)


def test_close_settles_the_writes_still_queued() -> None:
    """close() shut the pool down under a flush that still had a write queued: the flush died
    scheduling it, and that write waited forever."""
    async def main() -> tuple[list[Any], SetWriter]:
        kernel = Kernel()
        kernel.gate.clear()
        writer = SetWriter(FqdnSets(kernel))
        first = asyncio.ensure_future(writer.write(ITEM))
        while kernel.calls == 0:  # the first write is in the kernel
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(writer.write(ITEM))
        await asyncio.sleep(0.01)  # queued behind it
        threading.Timer(0.2, kernel.gate.set).start()
        writer.close()  # the agent stops
        return await _settled(first, second), writer

    (first, second), writer = asyncio.run(main())
    assert first is True  # it was in the kernel: committed
    assert isinstance(second, KernelError)
    with pytest.raises(KernelError, match="closed"):
        asyncio.run(writer.write(ITEM))


class Tableless(Kernel):
    """Refuses every write; `table` says whether our table exists (None: cannot tell)."""

    def __init__(self, table: bool | None) -> None:
        super().__init__(crash=KernelError("No such file or directory"))
        self.table = table

    def has_table(self) -> bool:
        if self.table is None:
            raise KernelError("netlink said no")
        return self.table


@pytest.mark.parametrize(("table", "settled"), [(False, False), (True, KernelError),
                                                (None, KernelError)])
def test_a_write_without_our_table_is_skipped_not_failed(table: bool | None,
                                                          settled: Any) -> None:
    """No table of ours (nothing applied, `outguard remove`): nothing is filtered, the answer
    goes (False: not held); with the table there, or no way to tell, the write fails (closed)."""
    kernel = Tableless(table)

    async def main() -> list[Any]:
        writer = SetWriter(FqdnSets(kernel, kernel.has_table))
        try:
            return await _settled(writer.write(ITEM), writer.write(ITEM))
        finally:
            writer.close()

    for got in asyncio.run(main()):
        assert got is settled if isinstance(settled, bool) else isinstance(got, settled)
