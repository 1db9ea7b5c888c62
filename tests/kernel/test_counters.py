"""kernel.counters: raw nf_tables netlink. Pure encoder/decoder tests, then real kernels."""

from __future__ import annotations

import errno
import json
import socket
import struct

import pytest

from outguard.errors import KernelError
from outguard.kernel import counters as c
from outguard.kernel import netns as ns
from outguard.kernel.libnft import Nft

# --- pure: hand-built bytes ------------------------------------------------------------------

NEWOBJ = (10 << 8) | 18
NEWTABLE = (10 << 8) | 0


def _nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _nla(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _counter_obj(table: str, name: str, packets: int, nbytes: int) -> bytes:
    data = _nla(1, struct.pack(">Q", nbytes)) + _nla(2, struct.pack(">Q", packets))
    return (
        bytes([1, 0, 0, 0])  # nfgenmsg: NFPROTO_INET, v0, res_id
        + _nla(1, table.encode() + b"\0")
        + _nla(2, name.encode() + b"\0")
        + _nla(3, struct.pack(">I", 1))
        + _nla(4 | 0x8000, data)  # NFTA_OBJ_DATA | NLA_F_NESTED
        + _nla(5, struct.pack(">I", 1))  # NFTA_OBJ_USE, ignored
    )


def test_encode_getobj_dump_request() -> None:
    attrs = c.attr_str(c.NFTA_OBJ_TABLE, "outguard") + c.attr(c.NFTA_OBJ_TYPE, b"\0\0\0\1")
    raw = c.encode_request(
        c.NFT_MSG_GETOBJ, c.FAMILIES["inet"], attrs, seq=7, flags=c.NLM_F_REQUEST | c.NLM_F_DUMP
    )
    expected = (
        struct.pack("=IHHII", 44, 0x0A13, 0x0301, 7, 0)
        + b"\x01\x00\x00\x00"
        + struct.pack("=HH", 13, 1) + b"outguard\0" + b"\0\0\0"  # 13 bytes, padded to 16
        + struct.pack("=HH", 8, 3) + b"\x00\x00\x00\x01"
    )  # fmt: skip
    assert raw == expected
    assert len(raw) % 4 == 0


def test_decode_multipart_dump() -> None:
    datagram = (
        _nlmsg(NEWOBJ, c.NLM_F_MULTI, 7, _counter_obj("outguard", "deny_feed", 3, 180))
        + _nlmsg(NEWOBJ, c.NLM_F_MULTI, 7, _counter_obj("outguard", "x", 2**40, 2**63 + 1))
        + _nlmsg(c.NLMSG_DONE, c.NLM_F_MULTI, 7, struct.pack("=i", 0))
    )
    msgs = list(c.parse_messages(datagram))
    assert [m.type for m in msgs] == [NEWOBJ, NEWOBJ, c.NLMSG_DONE]
    assert c.decode_counter(msgs[0]) == ("outguard", "deny_feed", 3, 180)
    assert c.decode_counter(msgs[1]) == ("outguard", "x", 2**40, 2**63 + 1)


def test_decode_non_counter_and_table() -> None:
    quota = bytes([1, 0, 0, 0]) + _nla(2, b"q\0") + _nla(3, struct.pack(">I", 2))
    assert c.decode_counter(c.Message(NEWOBJ, 0, 1, quota)) is None
    table = bytes([10, 0, 0, 0]) + _nla(1, b"filter\0") + _nla(2, struct.pack(">I", 0))
    assert c.decode_table(c.Message(NEWTABLE, 0, 1, table)) == ("ip6", "filter")
    odd = bytes([42, 0, 0, 0]) + _nla(1, b"t\0")
    assert c.decode_table(c.Message(NEWTABLE, 0, 1, odd)) == ("42", "t")


def test_decode_error_message() -> None:
    payload = struct.pack("=i", -errno.ENOENT) + struct.pack("=IHHII", 20, 0x0A01, 5, 9, 0)
    (msg,) = c.parse_messages(_nlmsg(c.NLMSG_ERROR, 0, 9, payload))
    assert c.error_code(msg) == errno.ENOENT


def test_truncated_input_is_an_error() -> None:
    good = _nlmsg(NEWOBJ, 0, 1, _counter_obj("t", "n", 1, 1))
    with pytest.raises(KernelError, match="malformed netlink message"):
        list(c.parse_messages(good[:-4]))
    with pytest.raises(KernelError, match="malformed netlink attribute"):
        c.parse_attrs(struct.pack("=HH", 40, 1) + b"abcd")


def test_unknown_family() -> None:
    with pytest.raises(KernelError, match="unknown nftables family 'ipx'"):
        c.read_counters("ipx")


# --- kernel ----------------------------------------------------------------------------------


def _setup(nft: Nft) -> None:
    tbl = {"family": "inet", "table": "outguard"}
    nft.run_json({"nftables": [
        {"add": {"table": {"family": "inet", "name": "outguard"}}},
        {"add": {"counter": {**tbl, "name": "udp_discard"}}},
        {"add": {"counter": {**tbl, "name": "never"}}},
        {"add": {"quota": {**tbl, "name": "q", "bytes": 1000000}}},
        {"add": {"chain": {**tbl, "name": "out", "type": "filter", "hook": "output", "prio": 0,
                           "policy": "accept"}}},
        {"add": {"rule": {**tbl, "chain": "out", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                       "right": 9}},
            {"counter": "udp_discard"}]}}},
        # Same counter name in another table: must not leak into inet outguard's answer.
        {"add": {"table": {"family": "ip", "name": "outguard"}}},
        {"add": {"counter": {"family": "ip", "table": "outguard", "name": "ip_only"}}},
    ]})  # fmt: skip


def _send_udp(count: int, size: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"x" * size, ("127.0.0.1", 9))


@pytest.mark.kernel
def test_counters_after_traffic_match_nft(netns: str) -> None:
    with Nft(netns) as nft, ns.NetnsThread(netns) as t:
        assert t.call(c.read_counters) == {}  # no table yet
        _setup(nft)
        t.call(_send_udp, 5, 100)
        got = t.call(c.read_counters)
        assert got == {"udp_discard": (5, 5 * (20 + 8 + 100)), "never": (0, 0)}
        assert t.call(c.read_counters, "ip", "outguard") == {"ip_only": (0, 0)}
        assert t.call(c.read_counters, "inet", "absent") == {}
    listed = json.loads(ns.run(netns, ["nft", "-j", "list", "counters"]).stdout)
    by_nft = {
        o["counter"]["name"]: (o["counter"]["packets"], o["counter"]["bytes"])
        for o in listed["nftables"]
        if "counter" in o and o["counter"]["family"] == "inet"
    }
    assert got == by_nft


@pytest.mark.kernel
def test_table_exists_and_list_tables(netns: str) -> None:
    with Nft(netns) as nft, ns.NetnsThread(netns) as t:
        assert t.call(c.table_exists) is False
        assert t.call(c.list_tables) == []
        _setup(nft)
        nft.run_text("add table ip6 other; add table netdev edge")
        assert t.call(c.table_exists) is True
        assert t.call(c.table_exists, "ip", "outguard") is True
        assert t.call(c.table_exists, "ip6", "outguard") is False
        assert sorted(t.call(c.list_tables)) == [
            ("inet", "outguard"), ("ip", "outguard"), ("ip6", "other"), ("netdev", "edge"),
        ]  # fmt: skip
    # In the calling thread's namespace (the host; only read here) both views agree.
    assert c.table_exists() == (("inet", "outguard") in c.list_tables())


def test_decode_generation() -> None:
    newgen = (10 << 8) | c.NFT_MSG_NEWGEN
    payload = bytes([0, 0, 0, 0]) + _nla(1, struct.pack(">I", 0xFFFF_FFF0)) + _nla(2, b"\0\0\0\7")
    assert c.decode_generation(c.Message(newgen, 0, 1, payload)) == 0xFFFF_FFF0
    with pytest.raises(KernelError, match="no generation id"):
        c.decode_generation(c.Message(newgen, 0, 1, bytes(4)))


@pytest.mark.kernel
def test_ruleset_generation_moves_with_each_change_only(netns: str) -> None:
    with Nft(netns) as nft, ns.NetnsThread(netns) as t:
        g0 = t.call(c.ruleset_generation)
        identity, generation = nft.generation()
        assert t.call(c.ruleset_generation) == g0 == generation
        # the namespace's identity (boot id / netns cookie) is not the host's: equal generation
        # numbers of two namespaces never compare equal
        with c.open_socket() as host:
            assert identity and not identity.endswith(f"/{c.namespace_cookie(host)}")
        _setup(nft)
        g1 = t.call(c.ruleset_generation)
        assert g1 != g0
        # a transaction that changes nothing (the table exists) leaves it where it was
        nft.run_json({"nftables": [{"add": {"table": {"family": "inet", "name": "outguard"}}}]})
        assert t.call(c.ruleset_generation) == g1
        nft.run_text("add table ip6 other")  # anyone's table, not only ours
        assert t.call(c.ruleset_generation) != g1


@pytest.mark.kernel
def test_table_objects_lists_names_of_the_one_table(netns: str) -> None:
    with Nft(netns) as nft, ns.NetnsThread(netns) as t:
        assert t.call(c.table_objects) is None and nft.objects() is None  # no table yet
        _setup(nft)
        nft.run_text("add chain inet outguard inner; "
                     "add rule inet outguard inner meta l4proto { tcp, udp } accept; "
                     "add rule inet outguard inner tcp dport 22 jump { accept; }; "
                     "add set inet outguard big { type ipv4_addr; size 65536; }; "
                     "add map inet outguard m { type ipv4_addr : verdict; }; "
                     "add chain ip outguard ip_only; add set ip outguard ip_set { type ipv4_addr; }")
        # a set's elements are not what this reads: many of them change nothing
        nft.run_json({"nftables": [{"add": {"element": {
            "family": "inet", "table": "outguard", "name": "big",
            "elem": [f"10.0.{i // 256}.{i % 256}" for i in range(50_000)]}}}]})
        chains, sets, counters = t.call(c.table_objects)
        assert sorted(chains) == ["inner", "out"]
        assert sorted(sets) == ["big", "m"]
        assert sorted(counters) == ["never", "udp_discard"]  # the quota is not a counter
        assert nft.objects() == t.call(c.table_objects)
        assert t.call(c.table_objects, "ip", "outguard") == (["ip_only"], ["ip_set"], ["ip_only"])
        assert t.call(c.table_objects, "inet", "absent") is None


def test_an_interrupted_dump_is_read_to_its_end_before_it_is_asked_again() -> None:
    """NLM_F_DUMP_INTR on the first part of a dump: the rest is still read (a socket kept open
    must not be left inside a dump, or the next request gets EBUSY), then the dump is retried."""

    class FakeSocket:
        def __init__(self, seq: int) -> None:
            part = _counter_obj("outguard", "a", 1, 1)
            self.datagrams = [
                _nlmsg(NEWOBJ, c.NLM_F_MULTI | c.NLM_F_DUMP_INTR, seq, part),
                _nlmsg(NEWOBJ, c.NLM_F_MULTI, seq, part)
                + _nlmsg(c.NLMSG_DONE, c.NLM_F_MULTI, seq, struct.pack("=i", 0)),
            ]

        def send(self, data: bytes) -> int:
            return len(data)

        def recvmsg(self, _size: int) -> tuple[bytes, list[object], int, object]:
            return self.datagrams.pop(0), [], 0, None

    seq = next(c._seq) + 1  # the sequence number _exchange takes next
    fake = FakeSocket(seq & 0xFFFFFFFF)
    with pytest.raises(c._DumpInterruptedError):
        c._exchange(fake, c.NFT_MSG_GETOBJ, 1, b"", c.NLM_F_REQUEST | c.NLM_F_DUMP)  # type: ignore[arg-type]
    assert fake.datagrams == []
