"""The pipe between the agent and the resolver process: what the agent accepts from it."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson
import pytest

from outguard.dns import ipc
from outguard.dns.resolver import Stats
from outguard.policy.load import load_text
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy
from tests.ruleset.test_names import POLICY

SET4, SET6 = "f_0123456789ab_4", "f_0123456789ab_6"


def test_set_items_accepts_what_the_resolver_writes() -> None:
    assert ipc.set_items([[SET4, "198.51.100.7", 360], [SET6, "2001:DB8::7", 1]]) == [
        (SET4, "198.51.100.7", 360), (SET6, "2001:db8::7", 1)]


@pytest.mark.parametrize("raw", [
    [], "x", [[SET4, "198.51.100.7"]], [["l_feed_4a", "198.51.100.7", 60]],
    [["f_0123456789ab_4 ; flush ruleset", "198.51.100.7", 60]],
    [[SET4, "2001:db8::7", 60]], [[SET6, "198.51.100.7", 60]], [[SET4, "evil", 60]],
    [[SET6, "fe80::1%eth0", 60]], [[SET4, "198.51.100.7", 0]], [[SET4, "198.51.100.7", True]],
    [[SET4, "198.51.100.7", 10**9]], [[SET4, "198.51.100.7", 1.5]],
    [[SET4, "198.51.100.7", 60]] * 5000,
])
def test_set_items_refuses_anything_else(raw: Any) -> None:
    with pytest.raises(ipc.IpcError):
        ipc.set_items(raw)


def test_stats_from_the_resolver_are_integers_only() -> None:
    s = Stats(queries=5, upstream_failures={"192.0.2.53:53": 2})
    assert ipc.stats_from_json(ipc.stats_to_json(s)) == s
    for bad in ({"queries": "5"}, {"queries": True}, {"upstream_failures": 3},
                {"by_rcode": {"x" * 100: 1}}, {"by_rcode": {f"k{i}": 1 for i in range(100)}},
                {"queries": {"a": 1}}, [1]):
        with pytest.raises(ipc.IpcError):
            ipc.stats_from_json(bad)


def test_name_policy_travels_whole() -> None:
    names = NamePolicy.of(lower(load_text(POLICY)), {"ads.example.test": "/x/ads.txt"})
    again = NamePolicy.from_json(orjson.loads(orjson.dumps(names.to_json())))
    assert again == names
    for name in ("api.example.test", "a.cdn.example.test", "maybe.example.test",
                 "evil.example.test", "x.ads.example.test", "other.invalid"):
        assert again.lookup(name) == names.lookup(name)


def _read(data: bytes, limit: int = ipc.MAX_FRAME) -> Any:
    async def go() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await ipc.read_frame(reader, limit)
    return asyncio.run(go())


def test_frames() -> None:
    assert _read(ipc.frame({"t": "stop"})) == {"t": "stop"}
    assert _read(b"") is None
    for bad in (struct.pack("!I", 2**31) + b"{}", b"\x00\x00", struct.pack("!I", 10) + b"{}",
                struct.pack("!I", 3) + b"abc", struct.pack("!I", 2) + b"[]",
                struct.pack("!I", 9) + b'{"t": 1}'):
        with pytest.raises(ipc.IpcError):
            _read(bad)
    with pytest.raises(ipc.IpcError, match="frame of"):
        _read(ipc.frame({"t": "save", "data": "x" * 100}), limit=50)
