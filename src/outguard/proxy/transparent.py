"""Connections the kernel redirected into the proxy (`proxy: {transparent: [80, 443]}`).

Place in the data flow: the nat chain of `nftables.nft_proxy` bends other users' TCP to ports
80 and 443 to the proxy's transparent port; `serve` listens there and hands each connection to
`Transparent.handle`. The client does not know about the proxy: it connected to an address.

Per connection: the original destination is read from conntrack (`SO_ORIGINAL_DST`,
`IP6T_SO_ORIGINAL_DST`: a getsockopt on the accepted socket, no netlink); the client is found
by its socket's real ends (its address and port to the original destination); the name comes
from the first bytes: a TLS ClientHello's server name (peeked, never decrypted) or an HTTP
request's Host header. The name is decided as a CONNECT to it would be (`Proxy.decide`), and
then the original destination must be one of the addresses it resolves to: a forged server
name or Host header (an allowed name sent to an attacker's address) opens nothing. The proxy
connects to the original destination only (no second choice of address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import h11

from outguard.proxy import tunnel
from outguard.proxy.guard import Verdict, needs_process
from outguard.proxy.server import Client, Proxy, RefusedError, Streams, _answer
from outguard.proxy.target import BadHostError, IPAddress, parse_host

log = logging.getLogger("outguard.proxy")
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, at SOL_IP
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, at SOL_IPV6
# a fatal TLS alert: access_denied (49), for a refused name
ALERT_ACCESS_DENIED = b"\x15\x03\x01\x00\x02\x02\x31"


def parse_original(family: int, raw: bytes) -> tuple[IPAddress, int]:
    """The address and port of a `sockaddr_in` / `sockaddr_in6` as getsockopt returns it."""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[4:8]), port
    return ipaddress.IPv6Address(raw[8:24]), port


def original_destination(sock: socket.socket) -> tuple[IPAddress, int]:
    """Where the client meant to connect, before the redirect (OSError without conntrack)."""
    if sock.family == socket.AF_INET:
        return parse_original(sock.family, sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
    return parse_original(sock.family,
                          sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28))


class Transparent:
    """The transparent listener's callback, deciding with `proxy`'s rules and counts."""

    def __init__(self, proxy: Proxy, own_port: int) -> None:
        self.proxy = proxy
        self.own_port = own_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy = self.proxy
        proxy.active += 1
        try:
            if proxy.active > proxy.limits.connections:
                return
            await self._serve((reader, writer))
        except RefusedError as exc:
            await _answer(writer, exc.answer)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:  # one connection's bug must not stop the proxy
            log.exception("proxy: unexpected error on a redirected connection")
        finally:
            proxy.active -= 1
            writer.close()

    async def _serve(self, down: Streams) -> None:
        sock = down[1].get_extra_info("socket")
        orig, port = original_destination(sock)
        peer = down[1].get_extra_info("peername")
        if orig.is_loopback or port == self.own_port:
            return  # not redirected: someone connected to this port directly
        client = await self.proxy.identify(peer[0], peer[1], str(orig), port,
                                           needs_process(self.proxy.rules()))
        async with asyncio.timeout(self.proxy.limits.header_timeout):
            first = await down[0].read(tunnel.CHUNK)
        if first[:1] == b"\x16":
            await self._tls(down, first, client, orig, port)
        else:
            await self._http(down, first, client, (orig, port))

    async def _tls(self, down: Streams, first: bytes, client: Client, orig: IPAddress,
                   port: int) -> None:
        try:
            data, hello = await tunnel.read_hello(down[0], first,
                                                  self.proxy.limits.header_timeout)
            if hello.sni is None:
                raise ValueError("a ClientHello without a server name: nothing to decide by")
            target = parse_host(hello.sni)
        except (ValueError, BadHostError) as exc:
            where = parse_host(str(orig))
            await self.proxy.refused("TLS", where, port, client,
                                      Verdict(False, "proxy:sni", str(exc)), 403)
            raise RefusedError(403, str(exc), answer=tunnel.ALERT_UNRECOGNIZED_NAME) from None
        try:
            _addrs, verdict = await self.proxy.decide("TLS", target, port, client, orig)
        except RefusedError as exc:
            raise RefusedError(exc.status, exc.reason, exc.rule,
                               answer=ALERT_ACCESS_DENIED) from None
        up = await self.proxy.upstream("TLS", target, port, client, [orig], verdict)
        try:
            self.proxy.record("TLS", target, port, client, verdict, 200)
            up[1].write(data)
            del data, first, hello
            self.proxy.keep(await tunnel.hand_over(down, up, self.proxy.limits.idle_timeout))
        finally:
            up[1].close()

    async def _http(self, down: Streams, first: bytes, client: Client,
                    orig: tuple[IPAddress, int]) -> None:
        proxy = self.proxy
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=proxy.limits.header_bytes)
        conn.receive_data(first)
        while True:
            request = await proxy.next_request(conn, down[0])
            if request is None:
                return
            if request.method == b"CONNECT":
                raise RefusedError(400, "CONNECT on a redirected connection")
            await proxy.forward(conn, request, client, down, orig)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

