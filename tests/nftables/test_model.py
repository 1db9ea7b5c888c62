"""nftables.model: sets given as integers become nftables' JSON elements."""

from __future__ import annotations

from outguard.nftables.model import FAMILY, TABLE, int_elements, match, meta


def test_integer_sets_as_elements() -> None:
    assert int_elements([0xCB007101, 0xCB007102], 4, False) == ["203.0.113.1", "203.0.113.2"]
    assert int_elements([(0xCB007100, 0xCB0071FF), (1, 2)], 4, True) == [
        {"prefix": {"addr": "203.0.113.0", "len": 24}}, {"range": ["0.0.0.1", "0.0.0.2"]}]
    assert int_elements([1], 6, False) == ["::1"]


def test_the_table_and_expression_builders() -> None:
    assert (FAMILY, TABLE) == ("inet", "outguard")
    assert match(meta("skuid"), 0) == {"match": {"op": "==", "left": {"meta": {"key": "skuid"}},
                                                 "right": 0}}
