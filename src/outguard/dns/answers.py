"""Addresses of an upstream answer, following the CNAME chain from the question's name.

Pure; dnspython does the decoding (name decompression, record types). Only A/AAAA records whose
owner is on the chain count: an upstream's extra records for unrelated names must not open
anything. Each address comes with the TTL that bounds how long the client may use it: the
smallest TTL along the chain to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rdatatype

MAX_CHAIN = 16


@dataclass(frozen=True)
class Resolved:
    v4: dict[str, int]  # address → TTL
    v6: dict[str, int]
    chain: tuple[str, ...]  # the question's name, then each CNAME target


def addresses(data: bytes, qname: str) -> Resolved:
    """A/AAAA of `data` reachable from `qname`. ValueError if dnspython cannot decode it."""
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True, one_rr_per_rrset=False)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
        raise ValueError(f"undecodable DNS answer: {exc}") from exc
    cnames: dict[dns.name.Name, tuple[dns.name.Name, int]] = {}
    addrs: dict[dns.name.Name, list[tuple[int, str, int]]] = {}
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.CNAME and len(rrset):
            cnames[rrset.name] = (rrset[0].target, rrset.ttl)
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            version = 4 if rrset.rdtype == dns.rdatatype.A else 6
            addrs.setdefault(rrset.name, []).extend(
                (version, rd.address, rrset.ttl) for rd in rrset)
    name = dns.name.from_text(qname or ".")
    chain = [name]
    bound = 2**31 - 1
    v4: dict[str, int] = {}
    v6: dict[str, int] = {}
    for _ in range(MAX_CHAIN + 1):
        for version, addr, ttl in addrs.get(name, ()):
            out = v4 if version == 4 else v6
            out[addr] = max(out.get(addr, 0), min(ttl, bound))
        if name not in cnames:
            break
        target, ttl = cnames[name]
        bound = min(bound, ttl)
        if target in chain:
            break  # a CNAME loop: what we have so far
        name = target
        chain.append(name)
    return Resolved(v4, v6, tuple(n.to_text(omit_final_dot=True).lower() for n in chain))
