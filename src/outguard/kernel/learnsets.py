"""Learning's counting sets, read and reset by raw nf_tables netlink.

Place in the data flow: `nftables.nft_learn` declares one counting set per IP version, keyed by
(destination . protocol . port . uid), whose elements the packet path adds and counts;
`service.learning` hands `read_counts` to the learner (`monitor.learn`), which calls it at
every flush and adds the counts to the flows it attributed from the keys' first messages.

Why a dump that resets (NFT_MSG_GETSETELEM_RESET, Linux 6.5+), not `nft list set` and
differences: the kernel reads and zeroes each element's counter in one step (it subtracts what
it reported), so a flow counted while the dump runs is reported by this dump or the next one,
exactly once; and a key that expires and comes back starts again at zero without the reader
having to tell its lives apart. An interrupted dump (the ruleset changed meanwhile) is not asked
again: what it reset is counted, the rest waits for the next read. No `nft` process: a read
costs a netlink round trip per 32 KiB of elements, whatever else the table holds.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

from outguard.errors import KernelError
from outguard.kernel.counters import (
    FAMILIES,
    NFNL_SUBSYS_NFTABLES,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    _seq,
    attr_str,
    encode_request,
    error_code,
    parse_attrs,
    parse_messages,
)
from outguard.ruleset.keys import TABLE

NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM_RESET = 33
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS = 1, 7, 10
NFTA_DATA_VALUE = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_COUNTER_PACKETS = 2
_PROTOS = {6: "tcp", 17: "udp"}
_RECV = 1 << 17


class Count(NamedTuple):
    """Flows of one key since the last read."""

    dst: str
    proto: str
    port: int
    uid: int
    flows: int


def _items(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every attribute in order (a list repeats its type: `parse_attrs` keeps only the last)."""
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > len(data):
            raise KernelError(f"malformed netlink attribute (length {length} at offset {off})")
        yield kind & 0x3FFF, data[off + 4 : off + length]
        off += (length + 3) & ~3


def _packets(expr: bytes) -> int:
    attrs = parse_attrs(expr)
    if attrs.get(NFTA_EXPR_NAME, b"").rstrip(b"\0") != b"counter":
        return 0
    data = parse_attrs(attrs.get(NFTA_EXPR_DATA, b""))
    raw = data.get(NFTA_COUNTER_PACKETS, bytes(8))
    return int(struct.unpack(">Q", raw)[0])


def decode_key(raw: bytes) -> tuple[str, str, int, int] | None:
    """(destination, protocol, port, uid) of a key `daddr . l4proto . dport . skuid`: each part
    in a 4-byte register, the address and port in network order, the uid in host order."""
    alen = len(raw) - 12
    if alen not in (4, 16):
        return None
    proto = _PROTOS.get(raw[alen])
    if proto is None:
        return None
    port = struct.unpack_from(">H", raw, alen + 4)[0]
    uid = struct.unpack_from("=I", raw, alen + 8)[0]
    return str(ipaddress.ip_address(raw[:alen])), proto, port, uid


def decode_elements(payload: bytes) -> Iterator[Count]:
    """The counted keys of one NEWSETELEM message (after its nfgenmsg)."""
    top = parse_attrs(payload)
    for kind, elem in _items(top.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")):
        if kind != NFTA_LIST_ELEM:
            continue
        attrs = parse_attrs(elem)
        raw = parse_attrs(attrs.get(NFTA_SET_ELEM_KEY, b"")).get(NFTA_DATA_VALUE, b"")
        key = decode_key(raw)
        if key is None:
            continue
        flows = _packets(attrs[NFTA_SET_ELEM_EXPR]) if NFTA_SET_ELEM_EXPR in attrs else sum(
            _packets(e) for _k, e in _items(attrs.get(NFTA_SET_ELEM_EXPRESSIONS, b"")))
        if flows:
            yield Count(*key, flows)


def read_counts(sets: list[str], sock: socket.socket, table: str = TABLE.name,
                family: str = TABLE.family) -> list[Count]:
    """The keys counted in `sets` since the last read, their counters reset. A set that does
    not exist (yet, or any more) has none."""
    out: list[Count] = []
    for name in sets:
        out += _read_one(name, sock, table, FAMILIES[family])
    return out


def _read_one(name: str, sock: socket.socket, table: str, family: int) -> list[Count]:
    seq = next(_seq) & 0xFFFFFFFF
    attrs = attr_str(NFTA_SET_ELEM_LIST_TABLE, table) + attr_str(NFTA_SET_ELEM_LIST_SET, name)
    out: list[Count] = []
    try:
        sock.send(encode_request(NFT_MSG_GETSETELEM_RESET, family, attrs, seq=seq,
                                 flags=NLM_F_REQUEST | NLM_F_DUMP))
        while True:
            data = sock.recv(_RECV)
            for msg in parse_messages(data):
                if msg.seq != seq:
                    continue
                if msg.type == NLMSG_DONE:  # interrupted or not: what was reset is counted
                    return out
                if msg.type == NLMSG_ERROR:
                    code = error_code(msg)
                    if code in (0, 2):  # done; ENOENT: no such set
                        return out
                    raise KernelError(f"reading the counting set {name}: errno {code}")
                if msg.type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
                    out += decode_elements(msg.payload[4:])
    except OSError as exc:
        raise KernelError(f"reading the counting set {name}: {exc}") from exc
