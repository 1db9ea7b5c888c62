"""Destinations: the entries of a rule's `to` and of named lists.

Pure parsing of one text into a typed `Target` (address, network, host name, wildcard name or
`@list` reference), plus a fast bulk parser for list files. The bulk path uses `socket.inet_pton`
rather than `ipaddress`, because list files reach a million lines and `ipaddress` objects cost
several microseconds each; canonical text is what the compiler hands to nftables anyway.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["addr", "net", "host", "wildcard", "list"]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_V4_LOOKALIKE = re.compile(r"^[0-9./]+$")


@dataclass(frozen=True, slots=True)
class Target:
    """One parsed destination. `value` is canonical: compressed IPv6, lower-case ASCII names."""

    kind: Kind
    value: str
    version: int = 0  # 4 or 6 for addresses and networks

    def __str__(self) -> str:
        return self.value


_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses


def _addr(text: str) -> tuple[str, int] | None:
    """Canonical form and version of an IP address, or None. An IPv4-mapped IPv6 address
    (::ffff:a.b.c.d) is the IPv4 address: a socket that connects to it sends an IPv4 packet,
    and an `ip6 daddr` match would never see it."""
    try:
        socket.inet_pton(socket.AF_INET, text)
        return text, 4  # glibc's inet_pton rejects every non-canonical IPv4 form
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    if packed[:12] == _MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:]), 4
    return socket.inet_ntop(socket.AF_INET6, packed), 6


def is_mapped(text: str) -> bool:
    """True for an IPv4-mapped IPv6 address or network (`::ffff:203.0.113.10`,
    `::ffff:203.0.113.0/120`), which a policy reads as the IPv4 address or network."""
    addr, slash, length = text.strip().partition("/")
    if ":" not in addr or (slash and (not length.isdigit() or int(length) < 96)):
        return False
    try:
        return socket.inet_pton(socket.AF_INET6, addr)[:12] == _MAPPED
    except (OSError, ValueError):
        return False


class HostBitsError(ValueError):
    """A network written with host bits set; `network` is the one probably meant."""

    def __init__(self, message: str, network: str) -> None:
        super().__init__(message)
        self.network = network


def _net(text: str) -> Target:
    addr_text, _, len_text = text.partition("/")
    parsed = _addr(addr_text)
    if parsed is None or not len_text.isdigit():
        raise ValueError(f"{text!r} is not an IP address, network or host name")
    canon, version = parsed
    length = int(len_text)
    if version == 4 and ":" in addr_text:  # IPv4-mapped: ::ffff:a.b.c.d/96+n is a.b.c.d/n
        if length > 128:
            raise ValueError(f"{text!r}: prefix length /{length} is longer than /128")
        if length < 96:  # wider than the mapped range: an IPv6 network as written
            packed = socket.inet_pton(socket.AF_INET6, addr_text)
            canon, version = socket.inet_ntop(socket.AF_INET6, packed), 6
        else:
            length -= 96
    bits = 32 if version == 4 else 128
    if length > bits:
        raise ValueError(f"{text!r}: prefix length /{length} is longer than /{bits}")
    value = int.from_bytes(socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6,
                                            canon), "big")
    mask = ((1 << length) - 1) << (bits - length) if length else 0
    if value & ~mask & ((1 << bits) - 1):
        base = int_to_text(value & mask, version)
        raise HostBitsError(f"{text!r} has host bits set; did you mean {base}/{length}?",
                            f"{base}/{length}")
    if length == bits:
        return Target("addr", canon, version)
    return Target("net", f"{canon}/{length}", version)


def _hostname(text: str) -> str | None:
    """Lower-case ASCII (punycode) form of a DNS host name, or None when it is not one."""
    name = text.rstrip(".").lower() if text.endswith(".") and not text.endswith("..") else text.lower()
    if not name or len(name) > 253:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # an all-numeric top label is a mistyped address, not a name
        return None
    return name


def parse_target(text: str) -> Target:
    """Parse one `to` entry; ValueError with a message for people when it is none of the kinds."""
    text = text.strip()
    if text.startswith("@"):
        name = text[1:]
        if not _LIST_NAME.match(name):
            raise ValueError(f"{text!r} is not a valid list reference (@name)")
        return Target("list", name)
    if "/" in text:
        return _net(text)
    parsed = _addr(text)
    if parsed is not None:
        return Target("addr", parsed[0], parsed[1])
    if text.startswith("*."):
        rest = _hostname(text[2:])
        if rest is None or "." not in rest:
            raise ValueError(f"{text!r} is not a valid wildcard name (*.domain.tld)")
        return Target("wildcard", "*." + rest)
    if not _V4_LOOKALIKE.match(text) and ":" not in text:
        host = _hostname(text)
        if host is not None:
            return Target("host", host)
    raise ValueError(f"{text!r} is not an IP address, network or host name")


def text_to_int(text: str, version: int) -> int:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    return int.from_bytes(socket.inet_pton(family, text), "big")


def int_to_text(value: int, version: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


@dataclass(frozen=True, slots=True)
class LineError:
    """A bad line of a list file. The message never quotes the line: a list file may be a file
    that is no list at all (`/etc/shadow`), whose lines must not reach a terminal or a log."""

    line: int
    col: int
    message: str


def _line_message(exc: ValueError) -> str:
    if isinstance(exc, HostBitsError):  # the network it suggests is no secret of the file
        return f"host bits set; did you mean {exc.network}?"
    return "not an IP address, network or host name"


def parse_list_lines(lines: Iterable[str]) -> Iterator[tuple[int, Target | LineError]]:
    """Parse a list file: one entry per line, `#` comments, blank lines ignored.

    Yields (line number, Target or LineError). The common case, a bare IPv4 address, takes one
    `inet_pton` call and no regular expression.
    """
    inet_pton = socket.inet_pton
    af4 = socket.AF_INET
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text[0] == "#":
            continue
        if "#" in text:
            text = text.split("#", 1)[0].strip()
        try:
            inet_pton(af4, text)
            yield number, Target("addr", text, 4)
            continue
        except (OSError, ValueError):  # ValueError: an embedded NUL
            pass
        try:
            target = parse_target(text)
        except ValueError as exc:
            col = raw.find(text[:1]) + 1 if text else 1
            yield number, LineError(number, max(col, 1), _line_message(exc))
            continue
        if target.kind == "list":
            yield number, LineError(number, raw.find(text) + 1,
                                    "a list file cannot refer to another list")
            continue
        yield number, target
