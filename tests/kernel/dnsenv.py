"""A DNS world on top of the two-host topology: dnsmasq authoritative for `example.test` in the
peer namespace (the upstream), outguard's resolver in the server namespace, and a client.

    server ns: outguard's table + resolver on 127.0.0.1:53  ──►  peer ns: dnsmasq on
                                                                198.51.100.53 (log: auth[...] lines)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from outguard.dns.supervisor import DnsHandle, serve_dns
from outguard.kernel import netns as ns
from outguard.policy.load import load_policy
from outguard.ruleset.ir import DnsSettings, Ruleset
from outguard.ruleset.lower import lower
from tests.kernel.topology import Topology


class ResolverThread:
    """`serve_dns` (the real resolver process) driven from an event loop on a thread of its own."""

    def __init__(self, settings: DnsSettings, ruleset: Ruleset, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="og-dns", daemon=True)
        self._thread.start()
        try:
            self.handle: DnsHandle = asyncio.run_coroutine_threadsafe(
                serve_dns(settings, ruleset, **kwargs), self.loop).result(60)
        except BaseException:
            self._stop_loop()
            raise

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.handle.close(), self.loop).result(60)
        finally:
            self._stop_loop()


UPSTREAM = "198.51.100.53"
ZONE = "example.test"


@dataclass
class DnsWorld:
    topo: Topology
    dir: Path
    hosts: Path
    log: Path
    pid: int = 0
    resolver: ResolverThread | None = None
    ruleset: Ruleset | None = None
    policy: Path | None = None
    extra: list[str] = field(default_factory=list)

    def start_dnsmasq(self, ttl: int = 1) -> None:
        pidfile = self.dir / "dnsmasq.pid"
        argv = ["dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
                f"--pid-file={pidfile}", "--log-queries", f"--log-facility={self.log}",
                f"--listen-address={UPSTREAM}", "--bind-interfaces", "--user=root",
                "--group=root", f"--auth-server=dns.{ZONE},{UPSTREAM}", f"--auth-zone={ZONE}",
                f"--auth-ttl={ttl}", f"--local-ttl={ttl}", f"--addn-hosts={self.hosts}",
                "--cache-size=0", *self.extra]
        ns.run(self.topo.peer, argv)
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                self.pid = int(pidfile.read_text())
                return
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not start")

    def set_hosts(self, records: dict[str, list[str]], reload: bool = True) -> None:
        lines = [f"{a} {name}" for name, addrs in records.items() for a in addrs]
        self.hosts.write_text("\n".join(lines) + "\n")
        self.topo.add_addresses(*(a for addrs in records.values() for a in addrs))
        if reload and self.pid:
            os.kill(self.pid, signal.SIGHUP)
            time.sleep(0.1)

    def upstream_queries(self, name: str) -> int:
        text = self.log.read_text() if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if "auth[" in line and f" {name} " in line)

    def apply(self, text: str) -> Ruleset:
        self.policy = self.topo.write_policy(text)
        self.topo.apply(self.policy)
        self.ruleset = lower(load_policy(self.policy))
        return self.ruleset

    def start_resolver(self) -> ResolverThread:
        assert self.ruleset is not None and self.ruleset.dns is not None
        self.resolver = ResolverThread(self.ruleset.dns, self.ruleset,
                                       state_dir=self.dir / "state", netns=self.topo.server)
        return self.resolver

    def stop_resolver(self) -> None:
        if self.resolver is not None:
            self.resolver.close()
            self.resolver = None

    def ask(self, name: str, qtype: str = "A", timeout: float = 2.0,
            server: tuple[str, int] = ("127.0.0.1", 53), tcp: bool = False) -> dns.message.Message:
        """A query from the server namespace (uid 0), as a client program would send it."""
        q = dns.message.make_query(name, qtype)

        def go() -> dns.message.Message:
            import dns.query
            if tcp:
                return dns.query.tcp(q, server[0], port=server[1], timeout=timeout)
            return dns.query.udp(q, server[0], port=server[1], timeout=timeout)
        return self.topo.thread.call(go)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_resolver()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


def addresses(msg: dns.message.Message) -> list[str]:
    return [rd.address for rr in msg.answer if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            for rd in rr]


@contextlib.contextmanager
def dns_world(topo: Topology) -> Iterator[DnsWorld]:
    d = topo.state_dir.parent / "dns"
    d.mkdir()
    world = DnsWorld(topo, d, d / "hosts", d / "dnsmasq.log")
    topo.add_addresses(UPSTREAM)
    try:
        yield world
    finally:
        world.close()


def connect(topo: Topology, addr: str, port: int, timeout: float = 1.0) -> str:
    """TCP connect from the server namespace: refused/connected = passed, timeout = dropped."""
    def go() -> str:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect((addr, port))
                return "connected"
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "timeout"
            except OSError as exc:
                return f"err:{exc.errno}"
    return topo.thread.call(go)


def nft_set(topo: Topology, name: str) -> str:
    return subprocess.run(["ip", "netns", "exec", topo.server, "nft", "list", "set", "inet",
                           "outguard", name], capture_output=True, text=True, check=True).stdout
