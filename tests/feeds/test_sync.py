"""feeds.sync: what older outguards stored as nftables JSON reads back as integers."""

from __future__ import annotations

from outguard.feeds.sync import decode_elements


def test_stored_json_elements_as_integers() -> None:
    assert decode_elements(["0.0.0.1", "203.0.113.7"], "4a") == [1, 0xCB007107]
    assert decode_elements(["::1"], "6a") == [1]
    assert decode_elements(["192.0.2.1", {"prefix": {"addr": "203.0.113.0", "len": 24}},
                            {"range": ["0.0.0.1", "0.0.0.2"]}], "4n") == [
        (0xC0000201, 0xC0000201), (0xCB007100, 0xCB0071FF), (1, 2)]
