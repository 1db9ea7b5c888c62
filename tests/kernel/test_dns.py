"""The DNS resolver end to end: real dnsmasq upstream, real nftables sets, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.rcode
import pytest

from outguard.kernel import netns as ns
from tests.kernel.dnsenv import UPSTREAM, addresses, connect, dns_world, nft_set
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
  min_ttl: {{min_ttl}}
  grace: {{grace}}
allow:
  - name: api
    to: [api.example.test, "*.cdn.example.test"]
    ports: [80]
"""
RECORDS = {"api.example.test": ["198.51.100.7", "2001:db8::7"],
           "a.cdn.example.test": ["203.0.113.10"], "a.b.cdn.example.test": ["203.0.113.11"],
           "other.example.test": ["203.0.113.66"]}


def test_resolve_then_connect_never_races(topology: Topology) -> None:
    trials = int(os.environ.get("OG_DNS_TRIALS", "10000"))
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=1)
        w.apply(POLICY.format(min_ttl=0, grace=1))
        w.start_resolver()
        names = ["api.example.test", "a.cdn.example.test", "a.b.cdn.example.test"]
        failures = []
        start = time.monotonic()
        for i in range(trials):
            name = names[i % len(names)]
            got = addresses(w.ask(name))
            assert got, name
            result = connect(topology, got[0], 80)
            if result != "refused":
                failures.append((i, name, got[0], result))
        assert failures == []
        if time.monotonic() - start > 3:  # TTL 1: asked again and again
            assert w.upstream_queries("api.example.test") >= 2
        assert w.resolver is not None
        handle = w.resolver.handle
        w.stop_resolver()  # the resolver process reports its last counters on the way out
        assert handle.stats().set_writes >= 2


def test_unlisted_names_never_reach_upstream(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        w.apply(POLICY.format(min_ttl=300, grace=60))
        w.start_resolver()
        for name in ("other.example.test", "aGVsbG8gd29ybGQgc2VjcmV0IGRhdGE.example.test",
                     "example.test", "badexample.test"):
            r = w.ask(name)
            assert r.rcode() == dns.rcode.REFUSED and not r.answer
            assert w.upstream_queries(name) == 0
        assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
        assert w.upstream_queries("api.example.test") == 1
        # and nobody reaches the upstream directly, root included: only the resolver's uid
        assert w.resolver is not None and w.ruleset is not None and w.ruleset.dns is not None
        uid = w.resolver.handle.settings.uid
        assert uid is not None and uid != 0
        nobody, root, resolver = topology.passes(Probe(UPSTREAM, 53, "tcp", 65534),
                                                 Probe(UPSTREAM, 53, "tcp", 0),
                                                 Probe(UPSTREAM, 53, "tcp", uid))
        assert (nobody, root, resolver) == (False, False, True)
        assert connect(topology, "203.0.113.66", 80) == "timeout"
        assert w.resolver is not None
        w.resolver.close()
        w.resolver = None
        from outguard.dns.events import read_events
        blocked = list(read_events(w.dir / "state", blocked_only=True))
        assert [e.qname for e in blocked][:2] == ["other.example.test",
                                                  "agvsbg8gd29ybgqgc2vjcmv0igrhdge.example.test"]
        assert blocked[0].pid == os.getpid()  # the client process, found by sock_diag
        assert any("tunneling" in c for c in blocked[1].classifications)


def test_changed_records_new_allowed_at_once_old_expire(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts({"api.example.test": ["198.51.100.7"]}, reload=False)
        w.start_dnsmasq(ttl=1)
        w.apply(POLICY.format(min_ttl=0, grace=1))
        w.start_resolver()
        assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
        assert connect(topology, "198.51.100.7", 80) == "refused"
        w.set_hosts({"api.example.test": ["198.51.100.8"]})
        time.sleep(1.1)  # the cached answer (TTL 1) is gone
        assert addresses(w.ask("api.example.test")) == ["198.51.100.8"]
        assert connect(topology, "198.51.100.8", 80) == "refused"
        time.sleep(2.5)  # the old entry: timeout max(1, 0) + 1 s
        assert connect(topology, "198.51.100.7", 80, timeout=0.5) == "timeout"
        assert connect(topology, "198.51.100.8", 80, timeout=0.5) == "timeout"  # expired too


def test_restart_keeps_sets_and_fails_closed(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        rs = w.apply(POLICY.format(min_ttl=300, grace=60))
        w.start_resolver()
        assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
        w.stop_resolver()
        # agent down: the known destination still works, a new name cannot be resolved
        assert connect(topology, "198.51.100.7", 80) == "refused"
        with pytest.raises((dns.exception.Timeout, ConnectionRefusedError, OSError)):
            w.ask("a.cdn.example.test", timeout=0.5)
        assert connect(topology, "203.0.113.10", 80, timeout=0.5) == "timeout"
        # a re-apply keeps the set's entries
        base = rs.allow[0].fqdn_set
        w.topo.apply(w.policy)
        assert "198.51.100.7" in nft_set(topology, f"{base}_4")
        assert connect(topology, "198.51.100.7", 80) == "refused"
        # back up: the persisted cache answers without asking upstream again
        w.start_resolver()
        assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
        assert w.upstream_queries("api.example.test") == 1


def test_tcp_edns_and_fuzz(topology: Topology) -> None:
    with dns_world(topology) as w:
        big = {"big.cdn.example.test": [f"203.0.113.{i}" for i in range(100, 160)]}
        w.set_hosts({**RECORDS, **big}, reload=False)
        w.start_dnsmasq(ttl=60)
        w.apply(POLICY.format(min_ttl=300, grace=60))
        w.start_resolver()
        udp = w.ask("big.cdn.example.test")  # 60 A records: > 512 bytes without EDNS
        assert udp.flags & dns.flags.TC
        tcp = w.ask("big.cdn.example.test", tcp=True)
        assert len(addresses(tcp)) == 60
        assert connect(topology, "203.0.113.159", 80) == "refused"
        rng = random.Random(4)
        base = dns.message.make_query("api.example.test", "A").to_wire()

        def fuzz() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(2000):
                    if i % 2:
                        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
                    else:
                        b = bytearray(base)
                        for _ in range(rng.randrange(1, 6)):
                            b[rng.randrange(len(b))] = rng.randrange(256)
                        data = bytes(b)
                    s.sendto(data, ("127.0.0.1", 53))
        topology.thread.call(fuzz)
        assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]


DEAD_PORT = 5399  # on the upstream's address, nothing listens: ICMP port unreachable
SILENT = "198.51.100.99"  # blackholed in the peer namespace: no answer, no error (a timeout)
FAILOVER_POLICY = """
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: [{upstreams}]
  timeout: {timeout}
allow:
  - name: api
    to: [api.example.test, "*.cdn.example.test"]
    ports: [80]
"""


def _blackhole(topology: Topology, addr: str) -> None:
    from outguard.kernel import netns as ns
    ns.run(topology.peer, ["ip", "route", "add", "blackhole", f"{addr}/32"])


def test_failover_from_a_dead_port_and_a_silent_upstream(topology: Topology,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    with dns_world(topology) as w:
        _blackhole(topology, SILENT)
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        ups = f'"{UPSTREAM}:{DEAD_PORT}", "{SILENT}", "{UPSTREAM}"'
        w.apply(FAILOVER_POLICY.format(upstreams=ups, timeout=0.5))
        w.start_resolver()
        start = time.monotonic()
        assert addresses(w.ask("api.example.test", timeout=5)) == ["198.51.100.7"]
        first = time.monotonic() - start
        assert connect(topology, "198.51.100.7", 80) == "refused"
        # the dead port fails at once (ICMP), the silent server after its 0.5 s timeout
        assert 0.45 <= first < 2.0, first
        # both failed lately: tried last now, so the next name is answered without waiting
        start = time.monotonic()
        assert addresses(w.ask("a.cdn.example.test", timeout=5)) == ["203.0.113.10"]
        assert time.monotonic() - start < 0.4
        assert w.upstream_queries("a.cdn.example.test") == 1
        assert w.resolver is not None
        handle = w.resolver.handle
        w.stop_resolver()
        servers = handle.stats()
        assert servers.failures == 0 and servers.upstream == 2
        # each failing upstream counted once (the first name), the good one answered both
        assert servers.upstream_failures == {f"{UPSTREAM}:{DEAD_PORT}": 1, f"{SILENT}:53": 1,
                                             f"{UPSTREAM}:53": 0}
        assert servers.upstream_queries[f"{UPSTREAM}:53"] == 2
        # said when it happened, by the resolver process, not only in a summary at the end
        err = capfd.readouterr().err
        assert f"DNS upstream {UPSTREAM}:{DEAD_PORT} failed" in err
        assert f"DNS upstream {SILENT}:53 failed: {SILENT}:53: TimeoutError" in err


def test_all_upstreams_dead_is_servfail_within_the_timeouts(topology: Topology) -> None:
    with dns_world(topology) as w:
        _blackhole(topology, SILENT)
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        ups = f'"{UPSTREAM}:{DEAD_PORT}", "{SILENT}"'
        w.apply(FAILOVER_POLICY.format(upstreams=ups, timeout=0.3))
        w.start_resolver()
        start = time.monotonic()
        r = w.ask("api.example.test", timeout=5)
        took = time.monotonic() - start
        assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
        assert 0.25 <= took < 1.5, took
        assert connect(topology, "198.51.100.7", 80, timeout=0.5) == "timeout"  # nothing opened
        assert w.resolver is not None
        w.resolver.close()
        w.resolver = None
        from outguard.dns.events import read_events
        (event,) = read_events(w.dir / "state")
        assert event.action == "failed" and "no upstream answered" in event.reason
        assert f"{UPSTREAM}:{DEAD_PORT}" in event.reason and SILENT in event.reason


def test_dns_serve_and_log_through_the_cli(topology: Topology) -> None:
    import json
    import signal
    import subprocess
    import sys

    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        w.apply(POLICY.format(min_ttl=300, grace=60))
        assert w.policy is not None
        state = w.dir / "cli-state"
        proc = subprocess.Popen([sys.executable, "-m", "outguard", "dns", "serve", str(w.policy),
                                 "--netns", topology.server, "--state-dir", str(state)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("outguard dns: listening on 127.0.0.1:53")
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
            assert connect(topology, "198.51.100.7", 80) == "refused"
            assert w.ask("other.example.test").rcode() == dns.rcode.REFUSED
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        stats = json.loads(out.splitlines()[-1])  # printed on the way out
        assert (stats["queries"], stats["upstream"], stats["blocked"]) == (2, 1, 1)
        assert (state / "dns-cache.json").exists()  # saved on SIGTERM

        def log(*args: str) -> list[str]:
            got = subprocess.run([sys.executable, "-m", "outguard", "dns", "log", *args,
                                  "--state-dir", str(state)], capture_output=True, text=True,
                                 timeout=30, check=True)
            return got.stdout.splitlines()
        everything = log()
        assert len(everything) == 2 and "api.example.test" in everything[0]
        (blocked,) = log("--blocked", "--json")
        assert json.loads(blocked)["qname"] == "other.example.test"
        assert json.loads(blocked)["pid"] == os.getpid()


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def _dig(topology: Topology, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.run(topology.server, ["dig", "+time=1", "+tries=1", f"@{server}", *args],
                  check=False, timeout=20)


@pytest.mark.parametrize("user", ["", "nobody"])
def test_the_resolver_runs_as_its_user_and_root_reaches_no_upstream(topology: Topology,
                                                                     user: str) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = POLICY.format(min_ttl=300, grace=60)
        if user:
            policy = policy.replace("  grace: 60\n", f"  grace: 60\n  user: {user}\n")
        w.apply(policy)
        w.start_resolver()
        assert w.resolver is not None and w.resolver.handle.pid is not None
        uid = pwd.getpwnam(user or "outguard-dns").pw_uid
        status = _status(w.resolver.handle.pid)
        assert status["Uid"].split() == [str(uid)] * 4 and status["Groups"].strip() == ""
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        # through outguard: resolved by the resolver's own user, and the address opens
        got = _dig(topology, "127.0.0.1", "api.example.test", "A", "+short")
        assert got.stdout.split() == ["198.51.100.7"], got
        assert connect(topology, "198.51.100.7", 80) == "refused"
        # straight to the upstream as root, UDP and TCP: no answer
        for proto in ("+notcp", "+tcp"):
            direct = _dig(topology, UPSTREAM, "api.example.test", proto)
            assert direct.returncode != 0 and "ANSWER SECTION" not in direct.stdout, direct
        assert w.upstream_queries("api.example.test") == 1


def test_a_flood_of_idle_tcp_connections_neither_exhausts_nor_locks_out(topology: Topology) -> None:
    """1,100 idle TCP clients against a resolver started with the usual soft limit of 1,024
    file descriptors: TCP answers keep coming, refused queries are still recorded, descriptors
    stay bounded."""
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        w.apply(POLICY.format(min_ttl=300, grace=60))
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, limits[1]))
        try:
            w.start_resolver()  # the resolver process inherits the limit
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        assert w.resolver is not None
        pid = w.resolver.handle.pid
        assert pid is not None
        flood = subprocess.Popen(
            ns.exec_argv(topology.server, [sys.executable, "-c", _IDLE_CLIENTS, "1100"]),
            stdout=subprocess.PIPE, text=True)
        try:
            assert flood.stdout is not None
            assert flood.stdout.readline().strip() == "1100 open"
            tcp = w.ask("api.example.test", tcp=True, timeout=5)
            assert addresses(tcp) == ["198.51.100.7"]
            assert w.ask("other.example.test", tcp=True, timeout=5).rcode() == dns.rcode.REFUSED
            assert w.ask("evil.example.test", timeout=5).rcode() == dns.rcode.REFUSED
            assert len(os.listdir(f"/proc/{pid}/fd")) < 400
        finally:
            flood.kill()
            flood.wait()
        handle = w.resolver.handle
        w.stop_resolver()
        assert handle.stats().tcp_evicted >= 1100 - 256
        from outguard.dns.events import read_events
        blocked = [e.qname for e in read_events(w.dir / "state", blocked_only=True)]
        assert blocked == ["other.example.test", "evil.example.test"]


_IDLE_CLIENTS = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.connect(("127.0.0.1", 53))
    held.append(s)
print(len(held), "open", flush=True)
time.sleep(60)
"""


def _children() -> set[int]:
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            out |= {int(p) for p in (task / "children").read_text().split()}
    return out


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None  # gone: reaped


def test_a_start_cancelled_part_way_releases_everything(topology: Topology) -> None:
    """The agent stops while the resolver starts: serve_dns killed the resolver process and
    never reaped it (a zombie per attempt). Everything it acquired is released now: no
    process, not even a zombie, and no thread of it left."""
    from outguard.dns.supervisor import serve_dns

    with dns_world(topology) as w:
        ruleset = w.apply(POLICY.format(min_ttl=0, grace=1))
        assert ruleset.dns is not None
        threads = {t.ident for t in threading.enumerate()}
        before = _children()

        held: list[object] = []  # the error, as a caller keeps it to report it: reaping must
        # not wait for the garbage collector to drop the handle (Popen.__del__ reaps too)

        async def main() -> set[int]:
            assert ruleset.dns is not None
            task = asyncio.ensure_future(serve_dns(ruleset.dns, ruleset,
                                                   state_dir=w.dir / "state",
                                                   netns=topology.server))
            async with asyncio.timeout(30):
                while not (spawned := _children() - before) and not task.done():
                    await asyncio.sleep(0.002)
            assert not task.done(), "it started before it could be cancelled"
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await task
            held.append(info)
            return spawned

        spawned = asyncio.run(main())
        assert spawned
        assert {pid: _state(pid) for pid in spawned} == {pid: None for pid in spawned}
        deadline = time.monotonic() + 5
        while {t.ident for t in threading.enumerate()} - threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [t.name for t in threading.enumerate() if t.ident not in threads] == []
