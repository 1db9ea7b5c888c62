"""The agent follows the applied policy without a restart: a new `apply`, SIGHUP, a reload that
fails, and a steady query load across reloads.

Real pieces only: `outguard run` (a subprocess, or the agent in-process on its own thread) in
the server namespace (`ogt-<hex>`), dnsmasq authoritative for example.test in the peer
namespace as the upstream, NFLOG, nftables, sockets.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import dns.exception
import dns.message
import dns.rcode
import pytest

from tests.kernel.dnsenv import UPSTREAM, DnsWorld, addresses, connect, dns_world
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

RECORDS = {"x.example.test": ["198.51.100.7"], "y.example.test": ["198.51.100.8"],
           **{f"n{i}.example.test": [f"203.0.113.{20 + i}"] for i in range(8)}}
DNS = f"""version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
"""
POLICY_A = DNS + """allow:
  - name: web
    to: [x.example.test]
    ports: [80]
alerts:
  - stdout: json
"""
POLICY_B = DNS + """allow:
  - name: web
    to: [y.example.test]
    ports: [80]
alerts:
  - stdout: json
"""
METRICS = "127.0.0.1:9108"  # inside the server namespace
BOUND_S = 2.0  # the agent follows an apply within this (measured: see test output)


def _ok(msg: dns.message.Message, addr: str) -> bool:
    return msg.rcode() == dns.rcode.NOERROR and addresses(msg) == [addr]


def _refused(msg: dns.message.Message) -> bool:
    return msg.rcode() == dns.rcode.REFUSED and not msg.answer


def _wait_for_resolver(w: DnsWorld, proc: subprocess.Popen[str], name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"outguard run ended: {proc.communicate()}"
        try:
            w.ask(name, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            assert time.monotonic() < deadline, "the agent's resolver did not start"
            time.sleep(0.1)


def _until(check: object, timeout: float) -> float:
    """Seconds until `check()` holds (AssertionError after `timeout`)."""
    start = time.monotonic()
    while True:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.05)


def _serves(w: DnsWorld, allowed: str, refused: str) -> bool:
    try:
        return _ok(w.ask(allowed, timeout=0.5), RECORDS[allowed][0]) and _refused(
            w.ask(refused, timeout=0.5))
    except (dns.exception.Timeout, OSError):
        return False


def _metric(topo: Topology, name: str) -> float:
    def get() -> str:
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    """A sample's value; without labels in `name`, the sum over all of them."""
    prefixes = (name + " ",) if "{" in name else (name + " ", name + "{")
    return sum(float(line.rsplit(" ", 1)[1]) for line in topo.thread.call(get).splitlines()
               if line.startswith(prefixes))


@contextmanager
def _agent(topo: Topology, *args: str) -> Iterator[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "outguard", "run", *args, "--netns", topo.server,
            "--state-dir", str(topo.state_dir), "--metrics-listen", METRICS]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@contextmanager
def _world(topo: Topology) -> Iterator[DnsWorld]:
    with dns_world(topo) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        yield w


@pytest.mark.parametrize("mode", ["run POLICY", "run --no-apply"])
def test_the_agent_follows_a_new_apply_without_a_restart(topology: Topology, mode: str) -> None:
    with _world(topology) as w:
        a, b = topology.write_policy(POLICY_A, "a.yaml"), topology.write_policy(POLICY_B, "b.yaml")
        if mode == "run --no-apply":
            assert topology.cli("apply", str(a)).returncode == 0
        # the old README unit gave --no-apply the policy file too: what is applied wins
        with _agent(topology, *([str(a)] if mode == "run POLICY" else ["--no-apply", str(a)])) \
                as proc:
            _wait_for_resolver(w, proc, "x.example.test")
            assert _serves(w, "x.example.test", "y.example.test")
            pid = proc.pid
            done = topology.cli("apply", str(b))
            assert done.returncode == 0, done.stderr
            took = _until(lambda: _serves(w, "y.example.test", "x.example.test"), 10)
            print(f"\n{mode}: the agent served the new policy {took:.2f} s after apply returned")
            assert took <= BOUND_S
            # the resolver put y's address into B's set: the connect passes
            assert connect(topology, "198.51.100.8", 80) == "refused"
            assert connect(topology, "198.51.100.7", 80, timeout=0.5) == "timeout"
            # and back: a rollback is followed the same way
            assert topology.cli("rollback").returncode == 0
            _until(lambda: _serves(w, "x.example.test", "y.example.test"), BOUND_S)
            assert proc.poll() is None and proc.pid == pid  # never restarted
            assert _metric(topology, "outguard_policy_reloads_total") == 2
        _, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        assert stderr.count("reloaded (the applied policy changed)") == 2, stderr


def test_sighup_with_a_broken_policy_keeps_serving_and_says_so(topology: Topology) -> None:
    """`run POLICY` re-applies POLICY on SIGHUP; one that does not load changes nothing."""
    with _world(topology) as w:
        path = topology.write_policy(POLICY_A, "policy.yaml")
        with _agent(topology, str(path)) as proc:
            _wait_for_resolver(w, proc, "x.example.test")
            applied = topology.status()["policy_hash"]
            path.write_text(POLICY_A.replace("    ports: [80]\n", "    ports: [80\n"))
            proc.send_signal(signal.SIGHUP)
            _until(lambda: _metric(topology, 'outguard_policy_reloads_total{result="failed"}')
                   == 1, 10)
            assert _metric(topology, "outguard_policy_last_reload_successful") == 0
            assert _serves(w, "x.example.test", "y.example.test")
            assert topology.status()["policy_hash"] == applied  # the kernel kept it too
            # fixed: the next SIGHUP applies the file and the agent serves it
            path.write_text(POLICY_B)
            proc.send_signal(signal.SIGHUP)
            _until(lambda: _serves(w, "y.example.test", "x.example.test"), 10)
            assert topology.status()["policy_hash"] != applied
            assert _metric(topology, "outguard_policy_last_reload_successful") == 1
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
    assert "policy reload (SIGHUP) failed" in stderr and "policy.yaml:" in stderr, stderr
    alerts = [json.loads(line) for line in stdout.splitlines()]
    failed = [a for a in alerts if a.get("signature") == "policy-reload-failed"]
    assert len(failed) == 1 and failed[0]["severity"] == "high", alerts


def test_sighup_without_apply_reloads_what_is_applied_not_the_file(topology: Topology) -> None:
    """`run --no-apply`: SIGHUP reads everything again (here a signature file), from the
    applied policy; an edited, unapplied policy file is not applied."""
    with _world(topology) as w:
        path = topology.write_policy(POLICY_A, "policy.yaml")
        sigs = topology.state_dir.parent / "sigs.yaml"
        sigs.write_text("version: 1\nsignatures: []\n")
        assert topology.cli("apply", str(path)).returncode == 0
        with _agent(topology, "--no-apply", "--signatures", str(sigs), str(path)) as proc:
            _wait_for_resolver(w, proc, "x.example.test")
            path.write_text(POLICY_B)  # edited, not applied
            sigs.write_text("version: 1\nsignatures: [\n")
            proc.send_signal(signal.SIGHUP)
            _until(lambda: _metric(topology, 'outguard_policy_reloads_total{result="failed"}')
                   == 1, 10)
            assert _serves(w, "x.example.test", "y.example.test")
            sigs.write_text("version: 1\nsignatures: []\n")
            proc.send_signal(signal.SIGHUP)
            _until(lambda: _metric(topology, 'outguard_policy_reloads_total{result="ok"}')
                   == 1, 10)
            assert _serves(w, "x.example.test", "y.example.test")
        _, stderr = proc.communicate()
    assert "sigs.yaml" in stderr and "is not what is applied" not in stderr, stderr


def _load(w: DnsWorld, stop: threading.Event, counts: Counter[str]) -> None:
    """Sequential queries for names both policies allow, as fast as they are answered."""
    i = 0
    while not stop.is_set():
        name = f"n{i % 8}.example.test"
        i += 1
        try:
            msg = w.ask(name, timeout=2.0)
        except dns.exception.Timeout:
            counts["timeout"] += 1
            continue
        if _ok(msg, RECORDS[name][0]):
            counts["answered"] += 1
        else:
            counts[dns.rcode.to_text(msg.rcode())] += 1


def test_no_query_fails_while_the_agent_reloads(topology: Topology) -> None:
    both = DNS.replace("dns:\n", "dns:\n  min_ttl: 0\n  grace: 0\n") + """allow:
  - name: steady
    to: ["*.example.test"]
    ports: [80]
"""
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=1)  # answers expire every second: upstream queries and set writes
        a = topology.write_policy(both + "  - name: extra\n    to: [192.0.2.50]\n", "a.yaml")
        b = topology.write_policy(both, "b.yaml")
        with _agent(topology, str(a)) as proc:
            _wait_for_resolver(w, proc, "n0.example.test")
            counts: Counter[str] = Counter()
            stop = threading.Event()
            load = threading.Thread(target=_load, args=(w, stop, counts))
            load.start()
            try:
                time.sleep(1.0)
                for i in range(6):
                    done = topology.cli("apply", str(b if i % 2 == 0 else a))
                    assert done.returncode == 0, done.stderr
                    _until(lambda i=i: _metric(topology, "outguard_policy_reloads_total")
                           == i + 1, 10)
                time.sleep(1.0)
            finally:
                stop.set()
                load.join(10)
            print(f"\nqueries during 6 reloads: {dict(counts)}")
            assert counts["answered"] > 100
            assert set(counts) == {"answered"}, counts


SIGNATURE = """version: 1
signatures:
  - id: {id}
    title: {id}
    severity: high
    when:
      ports: [7001]
"""


def test_alert_sinks_signatures_and_nflog_group_switch_on_reload(topology: Topology) -> None:
    from outguard.service.options import AgentOptions
    from outguard.service.runner import AgentHandle
    from tests.alerts.peers import receiver

    first, second = "203.0.113.10", "203.0.113.11"
    topology.add_addresses(first, second)
    sigs = topology.state_dir.parent / "sigs.yaml"
    sigs.write_text(SIGNATURE.format(id="custom-one"))
    deny = f"version: 1\ndeny:\n  - name: bad\n    to: [{first}, {second}]\n"
    with receiver() as r1, receiver() as r2:
        topology.apply(deny + f'alerts:\n  - webhook: "{r1.url}"\n')
        opts = AgentOptions(policy=None, apply=False, netns=topology.server,
                            state_dir=topology.state_dir, signatures=[sigs])
        with AgentHandle(opts) as agent:
            assert topology.probe([Probe(first, 7001)]) == ["timeout"]
            (one,) = agent.wait_for_incidents(1, timeout=3.0)
            assert one.signature == "custom-one"
            _until(lambda: len(r1.bodies) == 1, 5)
            # another sink, another signature file content, another NFLOG group
            sigs.write_text(SIGNATURE.format(id="custom-two"))
            topology.apply(deny + f'alerts:\n  - webhook: "{r2.url}"\noptions:\n'
                           "  nflog_group: 7\n")
            assert agent.wait_for_reloads(1).ok == 1
            assert topology.probe([Probe(second, 7001)]) == ["timeout"]
            found = agent.wait_for_incidents(2, timeout=3.0)
            (two,) = [i for i in found if i.dst == second]
            assert two.signature == "custom-two"
            _until(lambda: len(r2.bodies) == 1, 5)
            assert json.loads(r2.bodies[0])["id"] == two.id
        assert len(r1.bodies) == 1  # the old sink got nothing after the switch


FEED_POLICY = """version: 1
allow:
  - name: anywhere
deny:
  - name: threat-{name}
    to: ["@feed:{name}"]
feeds:
  {name}: {{url: "{url}/list", format: plain, min_interval: 3600}}
"""


def test_feeds_follow_the_applied_policy(topology: Topology) -> None:
    from outguard.service.options import AgentOptions
    from outguard.service.runner import AgentHandle
    from tests.feeds.test_fetch import Server

    old, new = Server(), Server()
    old.body, new.body = b"203.0.113.30\n", b"203.0.113.31\n"
    topology.add_addresses("203.0.113.30", "203.0.113.31")
    try:
        topology.apply(FEED_POLICY.format(name="fa", url=old.url))
        opts = AgentOptions(policy=None, apply=False, netns=topology.server,
                            state_dir=topology.state_dir, alerts=[])
        with AgentHandle(opts) as agent:
            _until(lambda: topology.probe([Probe("203.0.113.30", 443)]) == ["timeout"], 10)
            topology.apply(FEED_POLICY.format(name="fb", url=new.url))
            assert agent.wait_for_reloads(1).ok == 1
            # fetched at once (not at the next round of the old schedule, up to 5 min away),
            # synced into the new set, and known to the monitor
            live = agent.running.live
            took = _until(lambda: topology.probe([Probe("203.0.113.31", 443)]) == ["timeout"]
                          and live.feeds.feed_of("203.0.113.31") is not None, 10)
            print(f"\nthe new feed was in the kernel {took:.2f} s after the reload")
            assert topology.probe([Probe("203.0.113.31", 8443)]) == ["timeout"]
            incs = agent.wait_for_incidents(3, timeout=3.0)
            (inc,) = [i for i in incs if i.dport == 8443]
            assert inc.feed == "fb (custom)" and inc.rule == "deny:threat-fb"
            # a policy without feeds: the schedule stops
            assert live.feeds.running
            topology.apply("version: 1\nallow:\n  - name: web\n    to: [192.0.2.50]\n")
            assert agent.wait_for_reloads(2).ok == 2
            _until(lambda: not live.feeds.running, 5)
        assert [p for p, _h in old.requests] == ["/list"]
        assert [p for p, _h in new.requests] == ["/list"]
    finally:
        old.close()
        new.close()


def test_cached_names_are_written_again_into_a_table_made_anew(topology: Topology) -> None:
    """`remove` + `apply` (or a reboot) makes the DNS sets anew, empty, while the resolver's
    cache still holds the answers: after a reload, and after an agent restart, an answer from
    the cache must put its addresses into the new sets again."""
    from outguard.service.options import AgentOptions
    from outguard.service.runner import AgentHandle

    with _world(topology) as w:
        topology.apply(POLICY_A)
        opts = AgentOptions(policy=None, apply=False, netns=topology.server,
                            state_dir=topology.state_dir, alerts=[])
        with AgentHandle(opts) as agent:
            assert _ok(w.ask("x.example.test"), "198.51.100.7")
            assert connect(topology, "198.51.100.7", 80) == "refused"
            assert topology.cli("remove").returncode == 0
            topology.apply(POLICY_A.replace("alerts:", "  - name: other\n    to: [192.0.2.50]\n"
                                                       "alerts:"))
            assert agent.wait_for_reloads(1).ok == 1
            assert _ok(w.ask("x.example.test"), "198.51.100.7")  # from the cache
            assert connect(topology, "198.51.100.7", 80) == "refused"
        assert topology.cli("remove").returncode == 0
        topology.apply(POLICY_A)
        with AgentHandle(opts):  # a restart reads the cache the last one saved
            assert _ok(w.ask("x.example.test"), "198.51.100.7")
            assert connect(topology, "198.51.100.7", 80) == "refused"


def test_the_resolver_moves_restarts_and_stops_with_the_dns_section(topology: Topology) -> None:
    from outguard.service.options import AgentOptions
    from outguard.service.runner import AgentHandle

    moved = POLICY_A.replace('listen: "127.0.0.1:53"', 'listen: "127.0.0.2:53"')
    with _world(topology) as w:
        topology.apply(POLICY_A)
        opts = AgentOptions(policy=None, apply=False, netns=topology.server,
                            state_dir=topology.state_dir, alerts=[])
        with AgentHandle(opts) as agent:
            first = agent.running.dns
            assert first is not None and _ok(w.ask("x.example.test"), "198.51.100.7")
            topology.apply(moved)  # a new address: started before the old one stops
            assert agent.wait_for_reloads(1).ok == 1
            assert _ok(w.ask("x.example.test", server=("127.0.0.2", 53)), "198.51.100.7")
            with pytest.raises((dns.exception.Timeout, OSError)):
                w.ask("x.example.test", timeout=0.5)
            # other upstreams on the same address: restarted in place
            topology.apply(moved.replace(f'["{UPSTREAM}"]', f'["192.0.2.99", "{UPSTREAM}"]'))
            assert agent.wait_for_reloads(2).ok == 2
            restarted = agent.running.dns
            assert restarted is not None and restarted.settings.upstreams[0] == ("192.0.2.99", 53)
            assert _ok(w.ask("x.example.test", server=("127.0.0.2", 53)), "198.51.100.7")
            # no dns: section any more: no resolver
            topology.apply("version: 1\nallow:\n  - name: web\n    to: [198.51.100.7]\n")
            assert agent.wait_for_reloads(3).ok == 3
            assert agent.running.dns is None
            with pytest.raises((dns.exception.Timeout, OSError)):
                w.ask("x.example.test", timeout=0.5, server=("127.0.0.2", 53))


def test_a_rule_that_gains_a_name_keeps_the_addresses_its_other_names_resolved_to(
        topology: Topology) -> None:
    """Adding a name to a rule made its FQDN set anew, EMPTY: a client that kept an answer
    (a JVM, nginx) was cut off until it asked again. Apply fills the new set from the
    resolver's saved cache, with the time the old entry had left; a removed name still
    stops at once."""
    from outguard.service.runner import AgentHandle, AgentOptions

    both = POLICY_A.replace("to: [x.example.test]", "to: [x.example.test, y.example.test]")
    only_y = POLICY_A.replace("to: [x.example.test]", "to: [y.example.test]")
    with _world(topology) as w:
        topology.apply(POLICY_A)
        opts = AgentOptions(policy=None, apply=False, netns=topology.server,
                            state_dir=topology.state_dir, alerts=[])
        with AgentHandle(opts):
            assert _ok(w.ask("x.example.test"), "198.51.100.7")
        # the agent saved its cache when it stopped (and every 30 s while it runs)
        assert connect(topology, "198.51.100.7", 80) == "refused"
        old = topology.nft("list", "sets", "inet")
        report = topology.apply(both)
        assert report.method == "delta"
        assert topology.nft("list", "sets", "inet") != old  # a new set for the rule
        assert connect(topology, "198.51.100.7", 80) == "refused"  # not asked again
        # the time the old entry had left: max(TTL 60, min_ttl 300) + grace 60, less its age
        found = re.search(r"198\.51\.100\.7 timeout (?:(\d+)m)?(?:(\d+)s)? expires",
                          topology.ruleset())
        assert found is not None
        timeout = int(found[1] or 0) * 60 + int(found[2] or 0)
        assert 300 <= timeout <= 360, found[0]
        assert connect(topology, "198.51.100.8", 80, timeout=0.5) == "timeout"  # y: not asked
        topology.apply(only_y)
        assert connect(topology, "198.51.100.7", 80, timeout=0.5) == "timeout"
