"""NFLOG netlink bytes → `BlockedPacket`s: the pure decoder at the head of the monitor.

Place in the data flow: `kernel.nflog.NflogSource` receives datagrams from the kernel and hands
the bytes here; the packets go on to `monitor.attribute`. No I/O, no state: the same bytes always
give the same result, so it is tested with captured kernel messages and fuzzed.

    >>> batch = decode(datagram, now=datetime.now(UTC))
    >>> for pkt in batch.packets:           # BlockedPacket(prefix="og:deny:x", dst=..., uid=...)
    ...     print(pkt.rule, pkt.dst, pkt.dport)
    >>> batch.seqs, batch.errors, batch.malformed    # for the source's loss accounting

Hand-written rather than through pyroute2: this runs once per blocked packet (the benchmark
asks for >= 50,000/s on one core), and a generic attribute parser that builds an object per
attribute costs several times more than the `struct.unpack_from` walk below. Malformed input
never raises: each bad message is skipped and named in `DecodedBatch.malformed`.

Constants are from linux/netlink.h, linux/netfilter/nfnetlink.h and nfnetlink_log.h.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from outguard.events import BlockedPacket

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
PACKET_MSG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4

NFULA_PACKET_HDR = 1
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_UID = 11
NFULA_SEQ = 12
NFULA_GID = 14
NLA_TYPE_MASK = 0x3FFF

HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PORTED = frozenset({6, 17, 33, 132, 136})  # source and destination port in the first 4 bytes
# IPv6 extension headers walked to find the transport header (RFC 8200 order; ESP ends the walk)
_EXT_HOPOPTS, _EXT_ROUTING, _EXT_FRAGMENT, _EXT_AH, _EXT_DSTOPTS = 0, 43, 44, 51, 60
_EXT_GENERIC = frozenset({_EXT_HOPOPTS, _EXT_ROUTING, _EXT_DSTOPTS, 135, 139, 140})

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, portid (host order)
_ATTR = struct.Struct("=HH")  # nlattr: len, type
_U32 = struct.Struct(">I")
_TS = struct.Struct(">QQ")  # struct nfulnl_msg_packet_timestamp: sec, usec
_PORTS = struct.Struct(">HH")
_ERR = struct.Struct("=i")
_NFGEN = 4  # struct nfgenmsg: family, version, res_id
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
# fast path (see `decode`): PACKET_HDR attr + PREFIX attr header; then four u32 attributes and
# the PAYLOAD header, all read in host order (the u32 values are turned with ntohl)
_HEAD = struct.Struct("=HHHBxHH")
_FAST = struct.Struct("=HHIHHIHHIHHIHH")
_FAST_TYPES = (NFULA_IFINDEX_OUTDEV, NFULA_UID, NFULA_GID, NFULA_SEQ, NFULA_PAYLOAD)
_FAST_LENS = (8, 8, 8, 8)
_PREFIXES: dict[bytes, str] = {}  # raw prefix attribute → text; the ruleset has few prefixes
_ZERO10 = bytes(10)


@dataclass(slots=True)
class DecodedBatch:
    """What one datagram held: packets, their NFLOG sequence numbers, and everything else."""

    packets: list[BlockedPacket] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # NFULA_SEQ of each packet that carried one
    errors: list[int] = field(default_factory=list)  # errno of NLMSG_ERROR (0 = an ACK)
    malformed: list[str] = field(default_factory=list)  # one reason per skipped message
    overrun: bool = False  # NLMSG_OVERRUN: the kernel says it dropped messages


_FIELDS = ("time", "prefix", "family", "proto", "src", "dst", "sport", "dport", "uid", "gid",
           "tcp_flags", "ifindex_out", "hook")
_new, _set = object.__new__, object.__setattr__


def _packet(time: datetime, prefix: str, family: int, proto: str, src: str, dst: str,
            sport: int | None, dport: int | None, uid: int | None, gid: int | None,
            tcp_flags: int | None, ifindex_out: int | None, hook: str) -> BlockedPacket:
    # The frozen dataclass __init__ sets 13 fields through object.__setattr__ (~3-5 us, the
    # largest single cost per packet); filling __dict__ at once builds the same object.
    pkt = _new(BlockedPacket)
    _set(pkt, "__dict__", {
        "time": time, "prefix": prefix, "family": family, "proto": proto, "src": src,
        "dst": dst, "sport": sport, "dport": dport, "uid": uid, "gid": gid,
        "tcp_flags": tcp_flags, "ifindex_out": ifindex_out, "hook": hook})
    return pkt


if tuple(f.name for f in fields(BlockedPacket)) != _FIELDS or hasattr(BlockedPacket, "__slots__"):
    _packet = BlockedPacket  # the record changed shape: the plain constructor is always right


class _MalformedError(Exception):
    pass


def _transport(data: bytes, off: int, end: int, proto: int) -> tuple[int | None, int | None, int | None]:
    """(sport, dport, tcp_flags) of the transport header at `off`; None where absent."""
    if proto in _PORTED and off + 4 <= end:
        sport, dport = _PORTS.unpack_from(data, off)
        flags = data[off + 13] if proto == 6 and off + 14 <= end else None
        return sport, dport, flags
    return None, None, None


def _ipv4(data: bytes, start: int, end: int) -> tuple[int, str, str, str, int | None, int | None, int | None]:
    if end - start < 20:
        raise _MalformedError(f"IPv4 header truncated ({end - start} bytes)")
    ihl = (data[start] & 0x0F) * 4
    if ihl < 20:
        raise _MalformedError(f"IPv4 header length {ihl} < 20")
    proto = data[start + 9]
    src = socket.inet_ntop(_AF_INET, data[start + 12 : start + 16])
    dst = socket.inet_ntop(_AF_INET, data[start + 16 : start + 20])
    # a non-first fragment has no transport header: ports unknown
    if (data[start + 6] & 0x1F) or data[start + 7]:
        return 4, PROTOS.get(proto) or f"other:{proto}", src, dst, None, None, None
    sport, dport, flags = _transport(data, start + ihl, end, proto)
    return 4, PROTOS.get(proto) or f"other:{proto}", src, dst, sport, dport, flags


def _ntop6(raw: bytes) -> str:
    # glibc writes ::/96 and ::ffff:0:0/96 with a dotted quad ("::0.1.0.0"); the rest of
    # outguard (ipaddress) writes "::1:0" (and, by Python version, either form for mapped
    # addresses). One spelling per address, or lookups by address miss.
    if raw[:10] == _ZERO10:
        return str(ipaddress.IPv6Address(raw))
    return socket.inet_ntop(_AF_INET6, raw)


def _ipv6(data: bytes, start: int, end: int) -> tuple[int, str, str, str, int | None, int | None, int | None]:
    if end - start < 40:
        raise _MalformedError(f"IPv6 header truncated ({end - start} bytes)")
    src = _ntop6(data[start + 8 : start + 24])
    dst = _ntop6(data[start + 24 : start + 40])
    proto = data[start + 6]
    off = start + 40
    fragmented = False
    for _ in range(8):  # bounded: a hostile chain of extension headers must not loop long
        if proto in _EXT_GENERIC or proto == _EXT_AH:
            if off + 2 > end:
                return 6, "other:ext", src, dst, None, None, None
            size = (data[off + 1] + 2) * 4 if proto == _EXT_AH else (data[off + 1] + 1) * 8
            proto, off = data[off], off + size
        elif proto == _EXT_FRAGMENT:
            if off + 8 > end:
                return 6, "other:ext", src, dst, None, None, None
            fragmented = fragmented or bool(_PORTS.unpack_from(data, off + 2)[0] & 0xFFF8)
            proto, off = data[off], off + 8
        else:
            break
    name = PROTOS.get(proto) or f"other:{proto}"
    if fragmented:
        return 6, name, src, dst, None, None, None
    sport, dport, flags = _transport(data, off, end, proto)
    return 6, name, src, dst, sport, dport, flags


# One function on purpose (the only one over the complexity bounds): the receive path of every
# blocked packet, inlined so that a message costs no call and no object per attribute
# (bench/monitor.py measures it against ulogd2).
def decode(buf: bytes | bytearray | memoryview, nbytes: int | None = None,  # noqa: C901, PLR0915
           now: datetime | None = None) -> DecodedBatch:
    """Decode the netlink messages in ``buf[:nbytes]``.

    `now` stamps packets that carry no kernel timestamp (locally sent packets usually do not);
    it defaults to the current time, taken once per call.
    """
    data = bytes(memoryview(buf)[:nbytes] if nbytes is not None else buf)
    out = DecodedBatch()
    if now is None:
        now = datetime.now(UTC)
    packets, seqs = out.packets, out.seqs
    hdr_unpack, attr_unpack, u32_unpack = _HDR.unpack_from, _ATTR.unpack_from, _U32.unpack_from
    head_unpack, fast_unpack, ports_unpack = _HEAD.unpack_from, _FAST.unpack_from, _PORTS.unpack_from
    ntohl, ntop, prefixes = socket.ntohl, socket.inet_ntop, _PREFIXES
    size = len(data)
    off = 0
    while off + 16 <= size:
        length, kind, _flags, _nlseq, _portid = hdr_unpack(data, off)
        if length < 16 or off + length > size:
            out.malformed.append(f"netlink message length {length} at offset {off} "
                                 f"(datagram of {size} bytes)")
            break
        end = off + length
        body = off + 16
        off = (end + 3) & ~3
        if kind != PACKET_MSG:
            if kind == NLMSG_ERROR and body + 4 <= end:
                out.errors.append(-_ERR.unpack_from(data, body)[0])
            elif kind == NLMSG_OVERRUN:
                out.overrun = True
            elif kind not in (NLMSG_NOOP, NLMSG_DONE):
                out.malformed.append(f"unexpected netlink message type {kind:#x}")
            continue
        if body + _NFGEN > end:
            out.malformed.append("NFLOG message without its nfgenmsg header")
            continue
        a = body + _NFGEN
        # Fast path: the layout the kernel writes for a local packet with our settings
        # (PACKET_HDR, PREFIX, IFINDEX_OUTDEV, UID, GID, SEQ, PAYLOAD; nfnetlink_log.c's order),
        # read with two unpacks instead of a loop over nine attributes. Anything else (input
        # and forward hooks, timestamps, hostile bytes) takes the general loop below.
        if a + 12 <= end:
            l1, t1, _hw, hook_no, l2, t2 = head_unpack(data, a)
            a1 = a + 8 + ((l2 + 3) & ~3)
            if l1 == 8 and t1 == NFULA_PACKET_HDR and t2 == NFULA_PREFIX and l2 > 4 \
                    and a1 + 36 <= end:
                (l3, t3, ifo, l4, t4, uid_, l5, t5, gid_, l6, t6, seq_, l7, t7
                 ) = fast_unpack(data, a1)
                p, pend = a1 + 36, a1 + 32 + l7
                if (t3, t4, t5, t6, t7) == _FAST_TYPES and (l3, l4, l5, l6) == _FAST_LENS \
                        and l7 >= 4 and pend <= end:
                    seq_ = ntohl(seq_)
                    seqs.append(seq_)
                    raw = data[a + 12 : a + 8 + l2]
                    prefix = prefixes.get(raw)
                    if prefix is None:
                        nul = raw.find(b"\0")
                        prefix = (raw if nul < 0 else raw[:nul]).decode("utf-8", "replace")
                        if len(prefixes) < 4096:
                            prefixes[raw] = prefix
                    try:
                        if pend - p >= 24 and data[p] == 0x45 and not (data[p + 6] & 0x1F) \
                                and not data[p + 7]:
                            proto_no = data[p + 9]
                            if proto_no in _PORTED:
                                sport, dport = ports_unpack(data, p + 20)
                            else:
                                sport = dport = None
                            fields = (4, PROTOS.get(proto_no) or f"other:{proto_no}",
                                      ntop(_AF_INET, data[p + 12 : p + 16]),
                                      ntop(_AF_INET, data[p + 16 : p + 20]), sport, dport,
                                      data[p + 33] if proto_no == 6 and pend - p >= 34 else None)
                        elif pend > p and data[p] >> 4 == 6:
                            fields = _ipv6(data, p, pend)
                        elif pend > p and data[p] >> 4 == 4:
                            fields = _ipv4(data, p, pend)
                        else:
                            raise _MalformedError("payload is not IPv4 or IPv6")
                    except _MalformedError as exc:
                        out.malformed.append(str(exc))
                        continue
                    packets.append(_packet(
                        now, prefix, fields[0], fields[1], fields[2], fields[3], fields[4],
                        fields[5], ntohl(uid_), ntohl(gid_), fields[6], ntohl(ifo),
                        HOOKS.get(hook_no) or f"hook:{hook_no}"))
                    continue
        hook = prefix = payload_at = payload_end = uid = gid = seq = ifout = stamp = None
        while a + 4 <= end:
            alen, atype = attr_unpack(data, a)
            if alen < 4 or a + alen > end:
                break
            atype &= NLA_TYPE_MASK
            v = a + 4
            vlen = alen - 4
            if atype == NFULA_PAYLOAD:
                payload_at, payload_end = v, v + vlen
            elif atype == NFULA_PREFIX:
                raw = data[v : v + vlen]
                nul = raw.find(b"\0")
                prefix = (raw if nul < 0 else raw[:nul]).decode("utf-8", "replace")
            elif vlen >= 4:
                if atype == NFULA_UID:
                    uid = u32_unpack(data, v)[0]
                elif atype == NFULA_GID:
                    gid = u32_unpack(data, v)[0]
                elif atype == NFULA_SEQ:
                    seq = u32_unpack(data, v)[0]
                elif atype == NFULA_PACKET_HDR:
                    hook = data[v + 2]
                elif atype == NFULA_IFINDEX_OUTDEV:
                    ifout = u32_unpack(data, v)[0]
                elif atype == NFULA_TIMESTAMP and vlen >= 16:
                    stamp = _TS.unpack_from(data, v)
            a += (alen + 3) & ~3
        if seq is not None:
            seqs.append(seq)  # counted even if the packet itself is unreadable: it arrived
        if payload_at is None or payload_end is None:
            out.malformed.append("NFLOG packet without payload (copy mode is not 'packet')")
            continue
        version = data[payload_at] >> 4 if payload_end > payload_at else 0
        try:
            if version == 4:
                fields = _ipv4(data, payload_at, payload_end)
            elif version == 6:
                fields = _ipv6(data, payload_at, payload_end)
            else:
                raise _MalformedError(f"payload is not IPv4 or IPv6 (version nibble {version})")
        except _MalformedError as exc:
            out.malformed.append(str(exc))
            continue
        when = now
        if stamp is not None:
            try:
                when = datetime.fromtimestamp(stamp[0] + stamp[1] / 1e6, UTC)
            except (OverflowError, OSError, ValueError):
                when = now  # a nonsense stamp: the receive time is still true
        family, proto, src, dst, sport, dport, tcp_flags = fields
        packets.append(_packet(
            when, prefix or "", family, proto, src, dst, sport, dport, uid, gid, tcp_flags, ifout,
            HOOKS.get(hook, f"hook:{hook}") if hook is not None else "output"))
    if off < size and size - off >= 4 and not out.malformed:
        out.malformed.append(f"{size - off} trailing bytes after the last netlink message")
    return out
