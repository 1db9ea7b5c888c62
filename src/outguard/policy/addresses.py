"""Address sets on integers: membership and coverage for `decide`, lint and the compiler.

Single addresses are kept as Python sets of integers and prefixes as (network, length) pairs
per IP version, so a million-address list costs one hash lookup per question.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from outguard.policy.targets import Target, text_to_int

BITS = {4: 32, 6: 128}


def parse_ip(text: str) -> tuple[int, int] | None:
    """(value, version) of an address text, or None."""
    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        try:
            return int.from_bytes(socket.inet_pton(family, text), "big"), version
        except OSError:
            continue
    return None


def packet_address(text: str) -> tuple[int, int] | None:
    """Like `parse_ip`, for an address a socket used: an IPv4-mapped IPv6 address
    (::ffff:a.b.c.d, what dual-stack sockets, sock_diag and Java report) leaves the host as an
    IPv4 packet, so it is the IPv4 address the kernel filters."""
    parsed = parse_ip(text)
    if parsed is not None and parsed[1] == 6 and parsed[0] >> 32 == 0xFFFF:
        return parsed[0] & 0xFFFFFFFF, 4
    return parsed


def net_bounds(value: int, length: int, version: int) -> tuple[int, int]:
    """First and last address of a prefix."""
    host = BITS[version] - length
    first = (value >> host) << host
    return first, first | ((1 << host) - 1)


@dataclass
class AddrSet:
    """Destinations by version: single addresses and prefixes."""

    singles: dict[int, set[int]] = field(default_factory=lambda: {4: set(), 6: set()})
    nets: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: {4: [], 6: []})

    @classmethod
    def of(cls, targets: Iterable[Target]) -> AddrSet:
        out = cls()
        for target in targets:
            out.add(target)
        return out

    def add(self, target: Target) -> None:
        if target.kind == "addr":
            self.singles[target.version].add(text_to_int(target.value, target.version))
        elif target.kind == "net":
            addr, length = target.value.split("/")
            self.nets[target.version].append((text_to_int(addr, target.version), int(length)))

    def add_text(self, text: str) -> None:
        parsed = parse_ip(text)
        if parsed is not None:
            self.singles[parsed[1]].add(parsed[0])

    def __bool__(self) -> bool:
        return any(self.singles.values()) or any(self.nets.values())

    def contains(self, value: int, version: int) -> bool:
        if value in self.singles[version]:
            return True
        bits = BITS[version]
        return any((value >> (bits - length)) == (net >> (bits - length)) if length else True
                   for net, length in self.nets[version])

    def covers_net(self, value: int, length: int, version: int) -> bool:
        """True when every address of the prefix is in this set (by one covering prefix)."""
        first, _last = net_bounds(value, length, version)
        bits = BITS[version]
        for net, nlen in self.nets[version]:
            if nlen <= length and (nlen == 0 or (first >> (bits - nlen)) == (net >> (bits - nlen))):
                return True
        return length == bits and first in self.singles[version]

    def covers(self, other: AddrSet) -> bool:
        for version in (4, 6):
            for value in other.singles[version]:
                if not self.contains(value, version):
                    return False
            for net, length in other.nets[version]:
                if not self.covers_net(net, length, version):
                    return False
        return True
