"""Passive DNS: the names behind addresses, read from the DNS answers the host receives.

Place in the data flow: learning mode copies every packet from source port 53 the host
receives (`nftables.nft_learn`, input chain) to an NFLOG group; `kernel.nflog_payload` decodes
them into `Payload`s; **here** each payload that holds a DNS answer becomes the addresses it
gave and the names on its CNAME chain (`dns.answers`), which `NameCache` keeps; `monitor.learn`
asks it for the names of each new flow's destination. Answers from any resolver count — the
host's own stub, a resolver on the network, outguard's (whose upstream answers arrive the same
way): a client that never asked outguard's resolver still gets its names.

The cache remembers an answer for at least `window` seconds (a TTL floor: glibc's, nscd's and
Java's caches hand out an address minutes after the answer, often beyond its TTL), or for the
TTL if longer. Bounded: at most `max_addresses` addresses (the least recently answered go
first) and `max_names` names per address (`dns.cache.RecentNames`). DNS over TCP is read when a
segment holds a whole message (the usual case for answers that fit one segment).
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message

from outguard.dns.answers import Resolved, addresses
from outguard.dns.cache import RecentNames
from outguard.kernel.nflog_payload import Payload

DEFAULT_WINDOW = 900.0  # seconds an answer counts at least (15 minutes)


def answer_of(payload: Payload) -> Resolved | None:
    """The addresses and names of a DNS response, or None if the payload is not one (a query,
    a fragment of a TCP stream, bytes that do not decode)."""
    data = payload.data
    if payload.proto == "tcp":
        if len(data) < 2:
            return None
        (length,) = struct.unpack_from(">H", data)
        if length + 2 > len(data):
            return None  # a message split over segments: not read (rare for answers)
        data = data[2 : 2 + length]
    if len(data) < 12 or not data[2] & 0x80:  # shorter than a header, or not a response
        return None
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True, one_rr_per_rrset=False)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
        return None
    if not msg.question or not msg.answer:
        return None
    qname = msg.question[0].name.to_text(omit_final_dot=True)
    try:
        got = addresses(data, qname)
    except ValueError:
        return None
    return got if got.v4 or got.v6 else None


class NameCache:
    """address → the names that lately answered with it (see the module docstring)."""

    def __init__(self, window: float = DEFAULT_WINDOW, max_addresses: int = 100_000,
                 max_names: int = 32) -> None:
        self.recent = RecentNames(window, max_addresses, max_names)
        self.answers = 0  # DNS answers with addresses taken in
        self.ignored = 0  # payloads that were no readable answer

    def take(self, payloads: list[Payload], now: float) -> None:
        for payload in payloads:
            got = answer_of(payload)
            if got is None:
                self.ignored += 1
                continue
            self.answers += 1
            self.recent.record(got, now)

    def names_of(self, addr: str, now: float) -> tuple[str, ...]:
        return self.recent.names_of(addr, now)

    def prune(self, now: float) -> None:
        self.recent.prune(now)

    def __len__(self) -> int:
        return len(self.recent.by_addr)
