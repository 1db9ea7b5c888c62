"""NFLOG netlink bytes → the transport payloads of the copied packets: the passive DNS tap's
decoder.

Place in the data flow: learning mode copies every DNS response the host receives (input
chain, source port 53) to an NFLOG group of its own; `payload_source` binds it (through
`kernel.nflog.NflogGroup`), this module turns each datagram into `Payload`s (addresses, ports,
the UDP or TCP payload), and `monitor.passivedns` reads the DNS answers out of them. Pure: no
I/O, malformed input never raises (each bad message is named in `PayloadBatch.malformed`), and
the NFLOG sequence numbers are kept for the group's loss accounting, as `nflog_decode` does.
Kept apart from `nflog_decode`, whose fast path reads only headers and must stay fast.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from datetime import datetime

from outguard.kernel.nflog import NLBUFSIZ_MAX, NflogGroup
from outguard.kernel.nflog_decode import (
    NFULA_PAYLOAD,
    NFULA_SEQ,
    NLA_TYPE_MASK,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    PACKET_MSG,
)

_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct(">I")
_PORTS = struct.Struct(">HH")
_ERR = struct.Struct("=i")
TCP, UDP = 6, 17
COPY_RANGE = 4096 + 60 + 60  # an EDNS answer of 4096 bytes behind the largest IP+TCP headers


@dataclass(frozen=True, slots=True)
class Payload:
    """One copied packet: who sent it to whom, and its transport payload."""

    time: datetime
    proto: str  # tcp | udp
    src: str
    dst: str
    sport: int
    dport: int
    data: bytes  # the UDP payload, or the TCP segment's data


@dataclass(slots=True)
class PayloadBatch:
    packets: list[Payload] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    overrun: bool = False


def _l4(data: bytes, now: datetime) -> Payload | str:
    """The Payload of an IP packet, or why there is none."""
    if not data:
        return "empty payload"
    version = data[0] >> 4
    if version == 4:
        if len(data) < 20:
            return "IPv4 header truncated"
        ihl = (data[0] & 0x0F) * 4
        if (data[6] & 0x1F) or data[7]:
            return "IPv4 fragment"
        proto, family, off = data[9], socket.AF_INET, ihl
        src, dst = data[12:16], data[16:20]
        total = min(len(data), struct.unpack_from(">H", data, 2)[0] or len(data))
    elif version == 6:
        if len(data) < 40:
            return "IPv6 header truncated"
        proto, family, off = data[6], socket.AF_INET6, 40
        src, dst = data[8:24], data[24:40]
        total = min(len(data), 40 + struct.unpack_from(">H", data, 4)[0])
    else:
        return f"payload is not IPv4 or IPv6 (version {version})"
    if proto == UDP:
        if off + 8 > total:
            return "UDP header truncated"
        start, name = off + 8, "udp"
    elif proto == TCP:
        if off + 20 > total:
            return "TCP header truncated"
        start, name = off + (data[off + 12] >> 4) * 4, "tcp"
    else:
        return f"not TCP or UDP (protocol {proto}; IPv6 extension headers are not followed)"
    sport, dport = _PORTS.unpack_from(data, off)
    return Payload(now, name, socket.inet_ntop(family, src), socket.inet_ntop(family, dst),
                   sport, dport, bytes(data[start:total]))


def decode_payloads(buf: bytes | bytearray | memoryview, nbytes: int | None,
                    now: datetime) -> PayloadBatch:
    """The packets in ``buf[:nbytes]``, stamped `now` (local packets carry no timestamp)."""
    data = bytes(memoryview(buf)[:nbytes] if nbytes is not None else buf)
    out = PayloadBatch()
    off, size = 0, len(data)
    while off + 16 <= size:
        length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, off)
        if length < 16 or off + length > size:
            out.malformed.append(f"netlink message length {length} at offset {off}")
            break
        body, end = off + 16, off + length
        off = (end + 3) & ~3
        if kind != PACKET_MSG:
            if kind == NLMSG_ERROR and body + 4 <= end:
                out.errors.append(-_ERR.unpack_from(data, body)[0])
            elif kind == NLMSG_OVERRUN:
                out.overrun = True
            continue
        a, payload = body + 4, None
        while a + 4 <= end:
            alen, atype = _ATTR.unpack_from(data, a)
            if alen < 4 or a + alen > end:
                break
            atype &= NLA_TYPE_MASK
            if atype == NFULA_PAYLOAD:
                payload = data[a + 4 : a + alen]
            elif atype == NFULA_SEQ and alen >= 8:
                out.seqs.append(_U32.unpack_from(data, a + 4)[0])
            a += (alen + 3) & ~3
        if payload is None:
            out.malformed.append("NFLOG packet without payload")
            continue
        got = _l4(payload, now)
        if isinstance(got, str):
            out.malformed.append(got)
        else:
            out.packets.append(got)
    return out


def _decode(view: memoryview, n: int, now: datetime) -> PayloadBatch:
    return decode_payloads(view, n, now)


def payload_source(group: int, netns: str | None = None) -> NflogGroup[Payload]:
    """The DNS tap's NFLOG group: whole answers copied, small batches (a name must be known
    before the connection it announces is learned, which comes right after)."""
    return NflogGroup(_decode, group, netns=netns, copy_range=COPY_RANGE, qthreshold=64,
                      timeout=0.0, nlbufsiz=NLBUFSIZ_MAX, rcvbuf=16 << 20, max_batch=1024)
