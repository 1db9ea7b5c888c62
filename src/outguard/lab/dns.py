"""The lab's DNS: dnsmasq's command line for the `example.test` zone, and a tiny DNS codec.

Place in the data flow: `topology` -> `dnsmasq_argv` -> `lifecycle` starts dnsmasq in
og-lab-inet; `probe` uses `build_query` / `parse_response` to check that it answers (no `dig`
needed for `lab up`). Pure: no sockets here.

dnsmasq runs in authoritative mode (`--auth-zone`): answers carry the AA bit, misses are
NXDOMAIN with the zone's SOA, and names outside the zone are REFUSED, like a real authoritative
server. Every query is logged as ``auth[TYPE] NAME from ADDR`` in `LabPaths.dnsmasq_log`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from outguard.lab import topology as t

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
RCODE_NOERROR = 0


def host_record_option(h: t.Host) -> str:
    return "--host-record=" + ",".join((h.fqdn, *h.addresses))


def dnsmasq_argv(paths: t.LabPaths, binary: str = "dnsmasq") -> list[str]:
    """dnsmasq as the zone's only, authoritative server (it daemonizes and writes its pid)."""
    listen = (t.DNS_V4, t.DNS_V6)
    return [
        binary,
        "--conf-file=/dev/null",  # never read the machine's /etc/dnsmasq.conf
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--pid-file={paths.dnsmasq_pid}",
        "--log-queries",
        f"--log-facility={paths.dnsmasq_log}",
        *(f"--listen-address={a}" for a in listen),
        # Bind the two addresses only, not the wildcard: nothing else in inet is a resolver.
        "--bind-interfaces",
        # The log and pid files live under /run/outguard-lab, which the `dnsmasq` user may not
        # write; the lab is a throwaway namespace, so root is acceptable here.
        "--user=root",
        "--group=root",
        f"--auth-server=dns.{t.ZONE}," + ",".join(listen),
        f"--auth-zone={t.ZONE}",
        f"--auth-ttl={t.DNS_TTL}",
        *(host_record_option(h) for h in t.HOSTS),
        f"--addn-hosts={paths.cloud_hosts}",  # cloud.example.test, which the proxy demo moves
    ]


def cloud_hosts_text(address: str) -> str:
    """The `--addn-hosts` file that points cloud.example.test at `address`."""
    return f"{address} {t.CLOUD}\n"


def build_query(qname: str, qtype: int, txid: int) -> bytes:
    """A standard query for `qname` with recursion desired."""
    header = struct.pack("!HHHHHH", txid & 0xFFFF, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(p)]) + p for p in (x.encode("ascii") for x in qname.rstrip(".").split("."))
    )
    return header + labels + b"\x00" + struct.pack("!HH", qtype, CLASS_IN)


@dataclass(frozen=True)
class Response:
    txid: int
    rcode: int
    authoritative: bool
    addresses: tuple[str, ...]
    """A and AAAA answers, in order."""


class DnsFormatError(ValueError):
    """A DNS message that cannot be parsed."""


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:  # compression pointer: two bytes, ends the name here
            return pos + 2
        pos += 1 + length


def parse_response(data: bytes) -> Response:
    """The header bits and A/AAAA answers of a DNS response."""
    if len(data) < 12:
        raise DnsFormatError(f"message of {len(data)} bytes is shorter than a header")
    txid, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if not flags & 0x8000:
        raise DnsFormatError("not a response (QR bit clear)")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise DnsFormatError("answer record runs past the end of the message")
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        rdata = data[pos : pos + rdlen]
        if len(rdata) != rdlen:
            raise DnsFormatError("record data runs past the end of the message")
        if rtype == TYPE_A and rdlen == 4:
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_AAAA and rdlen == 16:
            addresses.append(str(ipaddress.IPv6Address(rdata)))
        pos += rdlen
    return Response(txid, flags & 0x000F, bool(flags & 0x0400), tuple(addresses))
