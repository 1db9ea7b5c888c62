"""Name → addresses for the proxy, resolved once per request.

Place in the data flow: `server` resolves a name that `guard.decide_name` allowed, `guard`
checks every answer, `server` connects to a checked answer: there is no second lookup between
the check and the connect (no DNS rebinding window).

With `dns:` in the policy the proxy asks outguard's own resolver (so the kernel's name sets
hold the address before the proxy connects, and the answer obeys the same rules and feeds);
otherwise the system's resolver (getaddrinfo). Both behind the `Resolve` signature, so tests
pass a table.

`Cached` keeps an answer per name for its TTL (outguard's resolver: the record's, capped;
getaddrinfo tells none: `SYSTEM_TTL`), so a kept-alive client's next request to the same host
costs no lookup (getaddrinfo is a hop to a worker thread and back). A cached answer is still
checked address by address against the policy in force on every request, and is the one
connected to: caching moves no check and adds no second lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from outguard.proxy.target import IPAddress

Resolve = Callable[[str], Awaitable[list[IPAddress]]]
# name → (addresses, seconds they may be kept)
TimedResolve = Callable[[str], Awaitable[tuple[list[IPAddress], float]]]
SYSTEM_TTL = 1.0  # getaddrinfo gives no TTL: a second saves the lookups of a busy client
MAX_TTL = 60.0  # a long-lived record is still asked again within a minute


class ResolveError(Exception):
    """The name could not be resolved (the message says why; the client gets a 502)."""


def _unique(addrs: list[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addrs))


async def system_resolve(name: str) -> list[IPAddress]:
    """getaddrinfo, as curl would: every A and AAAA answer."""
    return (await system_timed(name))[0]


async def system_timed(name: str) -> tuple[list[IPAddress], float]:
    """`system_resolve` with the time its answer may be kept (`SYSTEM_TTL`)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {name}: {exc.strerror}") from None
    out: list[IPAddress] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    return _unique(out), SYSTEM_TTL


def outguard_resolver(addr: str, port: int, timeout: float = 3.0) -> TimedResolve:
    """Asks outguard's resolver at addr:port (A and AAAA): the answer and its least TTL."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [addr]
    resolver.port = port
    resolver.lifetime = timeout
    resolver.cache = None

    async def ask(name: str, rdtype: dns.rdatatype.RdataType) -> tuple[list[IPAddress], float]:
        try:
            answer = await resolver.resolve(name + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], MAX_TTL
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise ResolveError(f"outguard's resolver at {addr}:{port} gave no answer for"
                               f" {name}: {exc}") from None
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else 0.0
        return [ipaddress.ip_address(r.address) for r in answer], ttl

    async def resolve(name: str) -> tuple[list[IPAddress], float]:
        (v4, t4), (v6, t6) = await asyncio.gather(ask(name, dns.rdatatype.A),
                                                  ask(name, dns.rdatatype.AAAA))
        if not v4 and not v6:
            raise ResolveError(f"{name} has no address (outguard's resolver at {addr}:{port})")
        return _unique(v4 + v6), min(t4, t6)

    return resolve


def table_resolver(table: dict[str, list[str]]) -> Resolve:
    """A fixed table (tests, the lab): a missing name is a ResolveError."""

    async def resolve(name: str) -> list[IPAddress]:
        if name not in table:
            raise ResolveError(f"cannot resolve {name}: not in the table")
        return [ipaddress.ip_address(a) for a in table[name]]

    return resolve


class Cached:
    """A `Resolve` over a `TimedResolve`: an answer is reused for its TTL (at most `MAX_TTL`;
    a failure is never kept). At most `size` names; the oldest entry goes first."""

    def __init__(self, resolve: TimedResolve, size: int = 4096) -> None:
        self._resolve = resolve
        self._size = size
        self._answers: dict[str, tuple[float, list[IPAddress]]] = {}

    async def __call__(self, name: str) -> list[IPAddress]:
        now = time.monotonic()
        kept = self._answers.get(name)
        if kept is not None and kept[0] > now:
            return list(kept[1])
        addrs, ttl = await self._resolve(name)
        if ttl > 0:
            if len(self._answers) >= self._size:
                self._answers.pop(next(iter(self._answers)))
            self._answers[name] = (time.monotonic() + min(ttl, MAX_TTL), addrs)
        return list(addrs)
