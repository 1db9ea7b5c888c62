"""apply.applyplan: a feed's hash set is declared with room to double."""

from __future__ import annotations

from outguard.apply.applyplan import MIN_CAPACITY, capacity_for


def test_capacity_doubles_and_has_a_floor() -> None:
    assert capacity_for(0) == capacity_for(10) == MIN_CAPACITY
    assert capacity_for(3000) == 8192 and capacity_for(4096) == 8192 and capacity_for(4097) == 16384
    assert all(capacity_for(n) >= 2 * n for n in (5000, 100_000, 1_000_000))
