"""Name → addresses for the proxy, resolved once per request.

Place in the data flow: `server` resolves a name that `guard.decide_name` allowed, `guard`
checks every answer, `server` connects to a checked answer: there is no second lookup between
the check and the connect (no DNS rebinding window).

With `dns:` in the policy the proxy asks outguard's own resolver (so the kernel's name sets
hold the address before the proxy connects, and the answer obeys the same rules and feeds);
otherwise the system's resolver (getaddrinfo). Both behind the `Resolve` signature, so tests
pass a table.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from outguard.proxy.target import IPAddress

Resolve = Callable[[str], Awaitable[list[IPAddress]]]


class ResolveError(Exception):
    """The name could not be resolved (the message says why; the client gets a 502)."""


def _unique(addrs: list[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addrs))


async def system_resolve(name: str) -> list[IPAddress]:
    """getaddrinfo, as curl would: every A and AAAA answer."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {name}: {exc.strerror}") from None
    out: list[IPAddress] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    return _unique(out)


def outguard_resolver(addr: str, port: int, timeout: float = 3.0) -> Resolve:
    """A `Resolve` that asks outguard's resolver at addr:port (A and AAAA)."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [addr]
    resolver.port = port
    resolver.lifetime = timeout
    resolver.cache = None

    async def ask(name: str, rdtype: dns.rdatatype.RdataType) -> list[IPAddress]:
        try:
            answer = await resolver.resolve(name + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise ResolveError(f"outguard's resolver at {addr}:{port} gave no answer for"
                               f" {name}: {exc}") from None
        return [ipaddress.ip_address(r.address) for r in answer]

    async def resolve(name: str) -> list[IPAddress]:
        v4, v6 = await asyncio.gather(ask(name, dns.rdatatype.A), ask(name, dns.rdatatype.AAAA))
        if not v4 and not v6:
            raise ResolveError(f"{name} has no address (outguard's resolver at {addr}:{port})")
        return _unique(v4 + v6)

    return resolve


def table_resolver(table: dict[str, list[str]]) -> Resolve:
    """A fixed table (tests, the lab): a missing name is a ResolveError."""

    async def resolve(name: str) -> list[IPAddress]:
        if name not in table:
            raise ResolveError(f"cannot resolve {name}: not in the table")
        return [ipaddress.ip_address(a) for a in table[name]]

    return resolve
