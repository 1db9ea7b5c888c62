"""The NFLOG source that moves to another group: batches of both reach the agent's loop, the
old one is closed after the switch, a bind that fails leaves the running source alone."""

from __future__ import annotations

import asyncio

import pytest

from outguard.monitor.agent import MemorySource
from outguard.service.switchsource import SwitchSource
from tests.monitor.events import packet


class Group(MemorySource):
    def __init__(self, group: int, fail: bool = False) -> None:
        super().__init__()
        self.group, self.fail = group, fail
        self.opened = self.closed = False

    def open(self) -> None:
        if self.fail:
            raise OSError(16, "group busy")
        self.opened = True

    def close(self) -> None:
        self.closed = True


def test_batches_of_the_old_then_the_new_group() -> None:
    made: dict[int, Group] = {}

    def make(group: int) -> Group:
        made[group] = Group(group, fail=group == 9)
        return made[group]

    async def main() -> list[str]:
        src = SwitchSource(make, 0)
        src.open()
        got: list[str] = []

        async def read() -> None:
            async for batch in src:
                got.extend(p.dst for p in batch)

        reader = asyncio.create_task(read())
        made[0].push(packet("203.0.113.1", 80))
        await asyncio.sleep(0.05)
        with pytest.raises(OSError, match="busy"):
            src.bind(9)
        assert made[9].closed and src.group == 0
        new = src.bind(5)
        assert isinstance(new, Group) and new.opened
        src.switch(new, 5)
        new.push(packet("203.0.113.2", 80))
        await asyncio.sleep(0.05)
        assert made[0].closed and not new.closed and src.stats is new.stats
        new.end()
        await asyncio.wait_for(reader, 2)
        src.close()
        assert new.closed
        return got

    assert asyncio.run(main()) == ["203.0.113.1", "203.0.113.2"]


def test_a_failing_source_ends_the_iteration_with_its_error() -> None:
    class Broken(Group):
        async def __aiter__(self):  # type: ignore[no-untyped-def,override]
            yield [packet("203.0.113.1", 80)]
            raise OSError("netlink went away")

    async def main() -> None:
        src = SwitchSource(Broken, 0)
        async for _batch in src:
            pass

    with pytest.raises(OSError, match="netlink went away"):
        asyncio.run(main())
