"""Real DNS messages for the pure tests, built with dnspython (an independent encoder)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rrset


def query(name: str, qtype: str = "A", *, edns: int | None = None, txid: int = 0x1234,
          do: bool = False) -> bytes:
    msg = dns.message.make_query(name, qtype, use_edns=0 if edns is not None else False,
                                 payload=edns or 1232, want_dnssec=do)
    msg.id = txid
    return msg.to_wire()


def answer(wire_query: bytes, records: list[tuple[str, int, str, str]], *, rcode: int = 0,
           edns: bool = True) -> bytes:
    """A response to `wire_query` with (name, ttl, type, value) answer records."""
    q = dns.message.from_wire(wire_query)
    r = dns.message.make_response(q)
    if not edns:
        r.use_edns(False)
    r.set_rcode(rcode)
    for name, ttl, rtype, value in records:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, value))
    r.flags |= dns.flags.RA
    return r.to_wire()


def parse(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)
