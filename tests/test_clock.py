"""clock: the wall clock every layer is given."""

from __future__ import annotations

import time

from outguard.clock import Clock, system_clock


def test_the_system_clock_is_the_wall_clock() -> None:
    clock: Clock = system_clock
    before = time.time()
    assert before <= clock() <= time.time()
