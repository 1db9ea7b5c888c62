"""Readiness and reachability probes for `lab up`: is every listener answering, over v4 and v6?

Place in the data flow: `lifecycle.up` calls `wait_ready` twice: first from inside og-lab-inet
(are the daemons serving?), then from og-lab-server (do routing, ARP and proxy NDP work?). Each
probe is a real socket opened on a `kernel.netns.NetnsThread`, so no external tool is needed.
TCP probes send `httpmini.PROBE_LINE` and expect `PROBE_REPLY`, which proves the asyncio loop
(not only the kernel's listen backlog) answers and keeps probes out of the services' logs;
HTTPS probes also verify the lab certificate; DNS probes ask for dns.example.test.
"""

from __future__ import annotations

import random
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import KernelError, LabError
from outguard.kernel.netns import NetnsThread
from outguard.lab import dns, httpmini, ntp
from outguard.lab import topology as t

PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Check:
    listener: t.Listener
    address: str

    @property
    def label(self) -> str:
        return f"{self.listener.host}.{t.ZONE} {t.url_host(self.address)}:{self.listener.port}"


def all_checks() -> list[Check]:
    return [Check(x, a) for x in t.LISTENERS for a in t.host(x.host).addresses]


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def probe_dns(address: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if `address` answers authoritatively for dns.example.test, else what went wrong."""
    qtype = dns.TYPE_AAAA if ":" in address else dns.TYPE_A
    txid = random.randrange(0x10000)
    with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(dns.build_query(f"dns.{t.ZONE}", qtype, txid), (address, 53))
            data = s.recv(4096)
        except OSError as exc:
            return f"no DNS answer ({exc})"
    try:
        resp = dns.parse_response(data)
    except dns.DnsFormatError as exc:
        return f"bad DNS answer: {exc}"
    if resp.txid != txid or resp.rcode != dns.RCODE_NOERROR or address not in resp.addresses:
        return f"unexpected DNS answer {resp}"
    return None


def probe_tcp(
    address: str, port: int, cafile: Path | None, timeout: float = PROBE_TIMEOUT
) -> str | None:
    """None if the listener answers the probe line, else what went wrong."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if cafile is not None:
                ctx = ssl.create_default_context(cafile=str(cafile))
                sock = ctx.wrap_socket(raw, server_hostname=f"api.{t.ZONE}")
            sock.sendall(httpmini.PROBE_LINE + b"\r\n\r\n")
            reply = sock.recv(64)
    except (OSError, ssl.SSLError) as exc:
        return str(exc) or type(exc).__name__
    return None if reply == httpmini.PROBE_REPLY else f"unexpected reply {reply!r}"


def probe_ntp(address: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if ntp.example.test answers an SNTP request on `address`, else what went wrong."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        sent = ntp.request()
        try:
            s.sendto(sent, (address, ntp.PORT))
            reply = s.recv(512)
        except OSError as exc:
            return f"no NTP answer ({exc})"
    return None if ntp.server_time(reply, sent) is not None else f"bad NTP answer {reply!r}"


def run_check(check: Check, paths: t.LabPaths) -> str | None:
    kind = check.listener.kind
    if kind == "dns":
        return probe_dns(check.address)
    if kind == "ntp":
        return probe_ntp(check.address)
    cafile = paths.tls_cert if kind == "https" else None
    return probe_tcp(check.address, check.listener.port, cafile)


def wait_ready(ns: str, paths: t.LabPaths, timeout: float) -> None:
    """Probe every listener from inside `ns` until all answer; LabError after `timeout` s."""
    pending = all_checks()
    failures: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        with NetnsThread(ns) as thread:
            while pending:
                failures = {}
                still: list[Check] = []
                for check in pending:
                    error = thread.call(run_check, check, paths)
                    if error is not None:
                        failures[check.label] = error
                        still.append(check)
                pending = still
                if pending and time.monotonic() > deadline:
                    break
                if pending:
                    time.sleep(0.1)
    except KernelError as exc:
        raise LabError(f"cannot probe the lab from {ns}: {exc}") from exc
    if pending:
        lines = "\n".join(f"  {label}: {err}" for label, err in failures.items())
        raise LabError(f"not reachable from {ns} after {timeout:.0f} s:\n{lines}")
