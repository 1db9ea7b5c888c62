"""A requested host, normalised: one canonical name or one address, whatever its spelling.

Place in the data flow: the first step of every proxy request (`server` → here → `guard`).
Pure: text in, `Target` out, or `BadHostError` with the reason (the client gets a 400).

Why so strict: an SSRF guard that checks one reading of a host while the resolver or the
connect call reads another is bypassed (Smokescreen's CVE-2022-24825 and CVE-2022-29188 were
such gaps). So every spelling the C library would accept as an address is read here as that
address (inet_aton's decimal, octal, hex and short forms: `2130706433`, `0177.0.0.1`,
`0x7f.1`), IDNA (UTS #46) maps a name first (full-width digits become ASCII digits, and then an
address), IPv6 loses its brackets and zone id, and a name whose last label is a number, or with
any character a host name cannot hold, is refused rather than guessed.

`facets` lists every address a connection to an address really reaches: the address itself
and an IPv4 address embedded in it (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo). Each
facet is checked by `guard`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NUMERIC = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_6TO4 = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


class BadHostError(ValueError):
    """A host the proxy refuses to read (the reason is the message)."""


@dataclass(frozen=True)
class Target:
    """A name (`addr` None) or an address (`name` None)."""

    name: str | None = None
    addr: IPAddress | None = None

    def __str__(self) -> str:
        if self.addr is not None:
            return f"[{self.addr}]" if self.addr.version == 6 else str(self.addr)
        return self.name or ""


def _inet_aton(parts: list[str]) -> ipaddress.IPv4Address:
    """The C library's reading of a dotted number: 1 to 4 parts, each decimal, 0-octal or
    0x-hex; the last part fills the remaining bytes."""
    values = []
    for part in parts:
        if part.startswith("0x"):
            if len(part) == 2:
                raise BadHostError(f"{'.'.join(parts)!r}: an empty hex part")
            values.append(int(part, 16))
        elif len(part) > 1 and part.startswith("0"):
            if not re.fullmatch(r"[0-7]+", part):
                raise BadHostError(f"{'.'.join(parts)!r}: {part!r} is no octal number")
            values.append(int(part, 8))
        else:
            values.append(int(part))
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise BadHostError(f"{'.'.join(parts)!r}: a number out of range for an IPv4 address")
    value = values[-1]
    for i, v in enumerate(values[:-1]):
        value |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(value)


def _ipv6(text: str) -> ipaddress.IPv6Address:
    addr_text, _, zone = text.partition("%")
    if zone.startswith("25"):  # a URL's percent-encoded "%": fe80::1%25eth0
        zone = zone[2:]
    if "%" in text and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", zone):
        raise BadHostError(f"{text!r}: a zone id that is no interface name")
    try:
        return ipaddress.IPv6Address(addr_text)
    except ValueError:
        raise BadHostError(f"{text!r} is not an IPv6 address") from None


def _plain(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is its IPv4 address (the kernel sends IPv4 packets)."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@functools.lru_cache(maxsize=4096)
def parse_host(text: str) -> Target:
    """The host of a request (no port), normalised. BadHostError if it cannot be read safely.
    Pure, and asked the same few names again and again: cached (IDNA is the costly part of a
    request's decision; a refusal raises and is not cached)."""
    if not text or len(text) > 300:
        raise BadHostError("an empty or over-long host")
    if any(ord(c) <= 32 or c in "/\\@?#" for c in text):
        raise BadHostError(f"{text!r}: a character no host name holds")
    if text.startswith("["):
        if not text.endswith("]"):
            raise BadHostError(f"{text!r}: an unclosed '['")
        return Target(addr=_plain(_ipv6(text[1:-1])))
    if ":" in text:  # a bare IPv6 address (a URL must bracket it; be lenient, but exact)
        return Target(addr=_plain(_ipv6(text)))
    if "%" in text:
        raise BadHostError(f"{text!r}: '%' in a host name")
    try:
        name = idna.encode(text, uts46=True, std3_rules=False, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise BadHostError(f"{text!r} is not a valid host name ({exc})") from None
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if all(_NUMERIC.match(label) for label in labels):
        if len(labels) > 4:
            raise BadHostError(f"{text!r}: too many parts for an IPv4 address")
        return Target(addr=_inet_aton(labels))
    if _NUMERIC.match(labels[-1]):
        raise BadHostError(f"{text!r}: a name ending in a number reads as an address")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadHostError(f"{text!r} is not a valid host name")
    return Target(name=name)


def split_authority(text: str, default_port: int | None) -> tuple[Target, int]:
    """`host:port` (a CONNECT target or a URL's authority) → (Target, port)."""
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadHostError(f"{text!r}: an unclosed '['")
        host, rest = text[:end + 1], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise BadHostError(f"{text!r}: text after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        raise BadHostError(f"{text!r}: an IPv6 address must be in brackets")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or len(port_text) > 5:
            raise BadHostError(f"{text!r}: the port is not in 1-65535")
        port = int(port_text)
    elif default_port is None:
        raise BadHostError(f"{text!r}: a port is needed")
    else:
        port = default_port
    return parse_host(host), port


def facets(addr: IPAddress) -> list[IPAddress]:
    """Every address a connection to `addr` reaches: itself and an embedded IPv4 address."""
    out: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        value = int(addr)
        if addr.ipv4_mapped is not None:
            out.append(addr.ipv4_mapped)
        elif (value >> 32 == 0 and value > 1) or addr in _NAT64:  # IPv4-compatible, NAT64
            out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        elif addr.sixtofour is not None:
            out.append(addr.sixtofour)
        elif addr in _TEREDO and addr.teredo is not None:
            out.extend(addr.teredo)
    return out
