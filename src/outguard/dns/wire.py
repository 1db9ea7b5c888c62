"""DNS messages on the wire: the query fast path, answers rebuilt for each client, errors.

Pure. Hand-written on purpose, for the per-query path: dnspython's `from_wire`/`to_wire` cost
tens of microseconds per message, and a cache hit here must cost a few (the benchmark compares
us with dnsmasq). We only walk the header, the question and record boundaries; full decoding of
upstream answers (CNAME chains, addresses) is left to dnspython in `answers`.

What the client gets back: its own id and question bytes (0x20 case randomisation survives), the
upstream's records with TTLs counted down, our own OPT record when it sent one (EDNS0), and a
truncated reply (TC) when the answer exceeds its UDP size (512 without EDNS), so it retries on TCP.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def wire_labels_to_text(labels: Iterable[bytes]) -> str:
    """Name from wire labels, lower-cased; bytes no policy name can hold are escaped (`\\DDD`),
    so a label with a '.' inside never passes for two labels."""
    out = []
    for label in labels:
        low = label.lower()
        text = low.decode("latin-1")
        if not set(text) <= _LDH:
            text = "".join(c if c in _LDH else f"\\{ord(c):03d}" for c in text)
        out.append(text)
    return ".".join(out)


TYPE_OPT = 41
OUR_UDP_SIZE = 1232  # the DNS flag day 2020 size: no IP fragmentation
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
RCODE_NOTIMP, RCODE_REFUSED = 4, 5
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QR, _AA, _TC, _RD, _RA, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010


class WireError(ValueError):
    """A message we cannot make sense of."""


@dataclass(frozen=True, slots=True)
class Query:
    txid: int
    flags: int
    question: bytes  # the raw question section (name, type, class) as the client sent it
    qname: str  # lower-case text, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    edns: int | None  # the client's UDP payload size, None without EDNS
    do: bool  # DNSSEC OK

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def key(self) -> tuple[str, int, int, bool]:
        return (self.qname, self.qtype, self.qclass, self.do)

    def udp_limit(self) -> int:
        return 512 if self.edns is None else max(512, min(self.edns, OUR_UDP_SIZE))


def _name_end(data: bytes, pos: int) -> int:
    """Offset after the (possibly compressed) name starting at `pos`."""
    end = len(data)
    while True:
        if pos >= end:
            raise WireError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError("compression pointer runs past the end")
            return pos + 2
        if length & 0xC0:
            raise WireError("unknown label type")
        pos += 1 + length


def _question(data: bytes, pos: int) -> tuple[int, list[bytes]]:
    """Labels of an uncompressed question name and the offset after it."""
    labels: list[bytes] = []
    total = 0
    while True:
        if pos >= len(data):
            raise WireError("question name runs past the end")
        length = data[pos]
        if length == 0:
            return pos + 1, labels
        if length & 0xC0:
            raise WireError("compression or unknown label type in the question")
        label = data[pos + 1:pos + 1 + length]
        if len(label) != length:
            raise WireError("label runs past the end")
        total += length + 1
        if total > 255:
            raise WireError("name longer than 255 bytes")
        labels.append(label)
        pos += 1 + length


def header_id(data: bytes) -> int | None:
    return int.from_bytes(data[:2], "big") if len(data) >= 12 else None


def parse_query(data: bytes) -> Query:
    """A client's query. WireError for anything that is not one standard question."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header")
    txid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if flags & _QR:
        raise WireError("a response, not a query")
    if qd != 1:
        raise WireError(f"{qd} questions (exactly one is supported)")
    end, labels = _question(data, 12)
    if end + 4 > len(data):
        raise WireError("question type and class missing")
    qtype, qclass = struct.unpack_from("!HH", data, end)
    qend = end + 4
    edns: int | None = None
    do = False
    pos = qend
    for i in range(an + ns + ar):
        pos = _name_end(data, pos)
        if pos + 10 > len(data):
            raise WireError("record header runs past the end")
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
        if i >= an + ns and rtype == TYPE_OPT:
            if edns is not None:
                raise WireError("more than one OPT record")
            edns, do = rclass, bool(ttl & 0x8000)
        pos += 10 + rdlen
        if pos > len(data):
            raise WireError("record data runs past the end")
    return Query(txid, flags, data[12:qend], wire_labels_to_text(labels), qtype, qclass, edns, do)


def _opt(ext_ttl: int = 0, do: bool = False) -> bytes:
    return b"\x00" + _RR.pack(TYPE_OPT, OUR_UDP_SIZE, (ext_ttl & 0xFFFF0000) | (0x8000 if do else 0), 0)


def error_reply(query: Query, rcode: int) -> bytes:
    """A reply without records: REFUSED, NXDOMAIN, SERVFAIL, NOTIMP..."""
    flags = _QR | _RA | (query.flags & (0x7800 | _RD | _CD)) | rcode
    opt = _opt(do=query.do) if query.edns is not None else b""
    return _HDR.pack(query.txid, flags, 1, 0, 0, 1 if opt else 0) + query.question + opt


def formerr_for(data: bytes) -> bytes | None:
    """FORMERR for a message with a readable header that is no valid query; None if not even
    that (or if it is a response: never answer answers, or two resolvers could loop)."""
    if len(data) < 12:
        return None
    txid, flags = struct.unpack_from("!HH", data)
    if flags & _QR:
        return None
    return _HDR.pack(txid, _QR | _RA | (flags & (0x7800 | _RD)) | RCODE_FORMERR, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream response, kept in the form the clients' replies are built from."""

    flags: int  # QR, AA, RA, rcode (the RD/CD bits come from each client)
    counts: tuple[int, int, int]  # answer, authority, additional (without OPT)
    body: bytes  # the records after the question, OPT removed
    ttl_offsets: tuple[tuple[int, int], ...]  # (offset in body, TTL as received)
    ext: int  # the upstream OPT's TTL field (extended rcode, version)
    ttl: int  # the smallest TTL: how long the answer may be cached
    question_len: int

    @classmethod
    def parse(cls, data: bytes) -> Answer:
        if len(data) < 12:
            raise WireError("shorter than a DNS header")
        _txid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
        if not flags & _QR or qd != 1:
            raise WireError("not a response to one question")
        pos, _labels = _question(data, 12)
        pos += 4
        qend = pos
        offsets: list[tuple[int, int]] = []
        ext = 0
        opt_at: tuple[int, int] | None = None
        total = an + ns + ar
        for i in range(total):
            start = pos
            pos = _name_end(data, pos)
            if pos + 10 > len(data):
                raise WireError("record header runs past the end")
            rtype, _rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            end = pos + 10 + rdlen
            if end > len(data):
                raise WireError("record data runs past the end")
            if rtype == TYPE_OPT and i >= an + ns:
                ext, opt_at = ttl, (start, end)
            else:
                offsets.append((pos + 4 - qend, ttl))
            pos = end
        extra = ar
        body = data[qend:pos]
        if opt_at is not None:
            extra -= 1
            if opt_at[1] == pos:  # the usual place: last
                body = data[qend:opt_at[0]]
            else:
                # records after OPT may point into each other: drop the additional section
                # (optional data) rather than re-encode the message
                body = data[qend:_section_start(data, qend, an + ns)]
                offsets = offsets[:an + ns]
                extra = 0
        ttls = [t for _o, t in offsets]
        return cls(flags & (_QR | _AA | _RA | 0x7800 | 0xF), (an, ns, extra), body,
                   tuple(offsets), ext, min(ttls) if ttls else 0, qend - 12)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    def reply(self, query: Query, age: int, limit: int) -> bytes:
        """This answer for `query`, TTLs lowered by `age` seconds, within `limit` bytes."""
        body = self.body
        if age > 0 and self.ttl_offsets:
            buf = bytearray(body)
            for off, ttl in self.ttl_offsets:
                struct.pack_into("!I", buf, off, ttl - age if ttl > age else 0)
            body = bytes(buf)
        an, ns, ar = self.counts
        opt = _opt(self.ext, query.do) if query.edns is not None else b""
        flags = self.flags | _QR | (query.flags & (_RD | _CD))
        size = 12 + len(query.question) + len(body) + len(opt)
        if size > limit:
            return _HDR.pack(query.txid, flags | _TC, 1, 0, 0, 1 if opt else 0) + query.question + opt
        return (_HDR.pack(query.txid, flags, 1, an, ns, ar + (1 if opt else 0))
                + query.question + body + opt)


def _section_start(data: bytes, pos: int, records: int) -> int:
    for _ in range(records):
        pos = _name_end(data, pos)
        rdlen = struct.unpack_from("!H", data, pos + 8)[0]
        pos += 10 + rdlen
    return pos


def build_query(query: Query, txid: int) -> bytes:
    """What we ask an upstream for a client's query: same question, our id, our EDNS size."""
    flags = _RD | (query.flags & _CD)
    return _HDR.pack(txid, flags, 1, 0, 0, 1) + query.question + _opt(do=query.do)


def response_matches(data: bytes, txid: int, question: bytes) -> bool:
    """A response to our query: same id, same question (names compared case-insensitively)."""
    if len(data) < 12 + len(question) or int.from_bytes(data[:2], "big") != txid:
        return False
    return data[12:12 + len(question)].lower() == question.lower()
