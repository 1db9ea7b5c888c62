"""The FQDN sets keep their addresses across applies, and the resolver answers while no table
holds its sets (nothing applied yet, or `outguard remove`d): the newcomer trial's defects.

Real pieces only: the agent (`AgentHandle`) with its resolver process in the server namespace
(`ogt-<hex>`), dnsmasq authoritative for example.test in the peer namespace, nftables.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.rcode
import pytest

from outguard.apply.applyplan import make_plan
from outguard.apply.executor import execute
from outguard.apply.recovery import rollback
from outguard.errors import KernelError
from outguard.kernel import netns as ns
from outguard.kernel.fqdnsets import FqdnSets
from outguard.ruleset.keys import SetName
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.state import StateDir
from tests.kernel.dnsenv import UPSTREAM, DnsWorld, addresses, connect, dns_world, nft_set
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

V4, V6 = "203.0.113.11", "2001:db8:10::10"
RECORDS = {"api.example.test": [V4, V6]}
POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
allow:
  - name: curl
    to: [api.example.test]
    ports: [80]
"""


def _wait(w: DnsWorld) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if w.ask("api.example.test", timeout=0.3).rcode() == dns.rcode.NOERROR:
                return
        except (OSError, dns.exception.Timeout):
            pass
        assert time.monotonic() < deadline, "the agent's resolver did not answer"
        time.sleep(0.1)


def _sets() -> tuple[str, str]:
    base = SetName.fqdn_base("allow", "curl", ["api.example.test"])
    return f"{base}_4", f"{base}_6"


def _held(topo: Topology) -> tuple[bool, bool]:
    four, six = _sets()
    return V4 in nft_set(topo, four), V6 in nft_set(topo, six)


def _filled(w: DnsWorld, topo: Topology) -> None:
    """Resolve the allowed name through the agent: both sets hold its addresses."""
    assert sorted(addresses(w.ask("api.example.test", "A"))) == [V4]
    assert sorted(addresses(w.ask("api.example.test", "AAAA"))) == [V6]
    assert _held(topo) == (True, True)


@contextlib.contextmanager
def _resolv_conf(topo: Topology) -> Iterator[None]:
    """The server namespace asks the agent's resolver (what `outguard dns install --netns`
    does): `verify` then resolves the rules' names through it."""
    etc = Path("/etc/netns") / topo.server
    assert topo.server.startswith("ogt-") and not etc.exists()
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        yield
    finally:
        shutil.rmtree(etc)


@pytest.mark.parametrize("extra", ["learn: true\n", "mode: audit\n", "learn: true\nmode: audit\n"])
def test_a_learn_toggle_keeps_the_name_sets(topology: Topology, extra: str) -> None:
    """Defect 1: `learn: true` added to an applied `dns:` policy emptied every name set; a
    client using the address it had (a JVM, nginx) was blocked until the name was asked again,
    and `apply --verify` failed and rolled back. (`mode: audit` alone: a control.)"""
    with dns_world(topology) as w, _resolv_conf(topology):
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=300)
        first = topology.write_policy(POLICY, "policy.yaml")
        topology.apply(first)
        opts = AgentOptions(policy=None, state_dir=topology.state_dir, netns=topology.server,
                            apply=False, feeds=False)
        with AgentHandle(opts):
            _wait(w)
            _filled(w, topology)
            assert connect(topology, V4, 80) == "refused"  # reached the peer
            second = topology.write_policy(extra + POLICY, "policy4.yaml")
            plan = topology.cli("plan", str(second))
            assert plan.returncode == 0, plan.stderr
            four, six = _sets()
            assert four not in plan.stdout and six not in plan.stdout, plan.stdout
            # learning's sets are made in the switch, with the rules that fill them, and said so
            made = [line for line in plan.stdout.splitlines() if "made with the rules" in line]
            assert len(made) == (4 if "learn" in extra else 0), plan.stdout
            # as the trial did it: the probes of `--verify` (uid 65534 to the name's addresses,
            # resolved through the agent) pass right after the commit, nothing is rolled back
            applied = topology.cli("apply", str(second), "--verify", "--confirm-timeout", "60",
                                   "--timings")
            assert applied.returncode == 0, applied.stdout + applied.stderr
            out = applied.stdout + applied.stderr
            probes = sorted(" ".join(line.split()) for line in out.splitlines()
                            if "allow:curl" in line)
            assert probes == ["ok allow:curl tcp 203.0.113.11:80 reached",
                              "ok allow:curl tcp [2001:db8:10::10]:80 reached"], out
            confirmed = topology.cli("confirm")
            assert confirmed.returncode == 0, confirmed.stderr
            # apply did what plan said: a delta, no whole table made again behind its back
            assert "replaces the whole table" not in plan.stdout
            assert '"method": "delta"' in applied.stderr, applied.stderr
            assert "warning" not in applied.stderr, applied.stderr
            assert _held(topology) == (True, True), (nft_set(topology, four),
                                                     nft_set(topology, six))
            assert connect(topology, V4, 80) == "refused"
            assert connect(topology, V6, 80) == "refused"
            # and back: the sets keep their addresses when learn goes again
            topology.apply(first)
            assert _held(topology) == (True, True)


# Each a change a policy may get between two applies; every ordered pair is applied in turn.
VARIANTS: dict[str, Callable[[str], str]] = {
    "base": lambda p: p,
    "learn": lambda p: "learn: true\n" + p,
    "audit": lambda p: "mode: audit\n" + p,
    "reject": lambda p: "options:\n  default_action: reject\n" + p,
    "forward": lambda p: "options:\n  forward: true\n" + p,
    "rule": lambda p: p + "  - name: ntp\n    to: [198.51.100.123]\n    ports: [123]\n"
                          "    proto: udp\n",
    "learn+forward": lambda p: "learn: true\noptions:\n  forward: true\n" + p,
    "proxy": lambda p: "proxy: {}\n" + p,
    "log_rate": lambda p: "options:\n  log_rate: 1/minute\n" + p,  # new log gate sets
    "learn+deny": lambda p: "learn: true\ndeny:\n  - name: bad\n    to: [198.51.100.66]\n" + p,
}


def _fill(topo: Topology) -> None:
    """What the resolver writes for api.example.test (`kernel.fqdnsets`, as the agent does)."""
    four, six = _sets()
    FqdnSets(topo.kernel()).write([(four, V4, 600), (six, V6, 600)])


def test_name_sets_keep_their_addresses_across_every_pair_of_policies(
        topology: Topology) -> None:
    """For every ordered pair (a, b) of the variants: a applied and its name sets filled, b
    applied: the apply is the delta `plan` showed (no table made anew behind its back), and the
    sets still hold the addresses; `rollback` to a keeps them too."""
    state = StateDir(topology.state_dir)
    failures = []
    for a, b in itertools.permutations(VARIANTS, 2):
        pa = topology.write_policy(VARIANTS[a](POLICY), "a.yaml")
        pb = topology.write_policy(VARIANTS[b](POLICY), "b.yaml")
        topology.apply(pa)
        _fill(topology)
        plan = make_plan(pb, state, topology.kernel())
        report = topology.apply(pb)
        if (report.method, report.warnings) != (plan.method, []) or _held(topology) != (True,
                                                                                     True):
            failures.append(f"{a} → {b}: {report.method} (plan: {plan.method})"
                            f" {report.warnings} held={_held(topology)}")
            continue
        rollback(state, topology.kernel())
        if _held(topology) != (True, True):
            failures.append(f"{a} → {b} → rollback: held={_held(topology)}")
    assert not failures, "\n".join(failures)


def _no_table_errors(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.levelno >= logging.ERROR
               and "no outguard table in the kernel holds the DNS sets" in r.getMessage())


def _failed(topo: Topology) -> list[str]:
    got = topo.cli("dns", "log", "--json")
    assert got.returncode == 0, got.stderr
    return [line for line in got.stdout.splitlines() if '"failed"' in line]


def test_after_remove_the_resolver_still_answers(topology: Topology,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Defect 2: after `outguard remove`, with the agent still serving its last policy, an
    allowed name got SERVFAIL once its cached answer expired (the write into the gone sets
    failed). No table: egress is open, nothing to fill: the answer goes, logged once."""
    caplog.set_level(logging.INFO, logger="outguard.dns")
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=2)
        # no floor, no grace: a set entry lives as long as its answer (2 s), so an ask 2 s on
        # writes the sets again (with the defaults, 300 s + 60 s on)
        policy = topology.write_policy(POLICY.replace(
            f'upstreams: ["{UPSTREAM}"]', f'upstreams: ["{UPSTREAM}"]\n  min_ttl: 0\n  grace: 0'))
        topology.apply(policy)
        opts = AgentOptions(policy=None, state_dir=topology.state_dir, netns=topology.server,
                            apply=False, feeds=False)
        with AgentHandle(opts):
            _wait(w)
            _filled(w, topology)
            removed = topology.cli("remove")
            assert removed.returncode == 0, removed.stderr
            time.sleep(2.5)  # the answers and their set entries expired
            for qtype, want in (("A", V4), ("AAAA", V6), ("A", V4)):
                got = w.ask("api.example.test", qtype)
                assert got.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(got.rcode())
                assert addresses(got) == [want]
            assert connect(topology, V4, 80) == "refused"  # no table: egress is open
            assert _no_table_errors(caplog) == 1  # loud, once
            assert _failed(topology) == []
            # applied again: the next answer fills the new table's sets (none was counted
            # as held while there was no table)
            topology.apply(policy)
            time.sleep(2.5)  # the agent follows the apply, the answers expire
            _filled(w, topology)
            assert connect(topology, V4, 80) == "refused"


def test_before_the_first_apply_the_resolver_answers(topology: Topology,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Defect 3: `outguard run --no-apply POLICY` serves the file while nothing is applied (the
    README's step before `dns install` and `apply`): its resolver must answer then, and the
    apply that follows must find the names' sets filled as soon as they are asked again."""
    caplog.set_level(logging.INFO, logger="outguard.dns")
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=300)
        policy = topology.write_policy(POLICY)
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server,
                            apply=False, feeds=False)
        with AgentHandle(opts):
            _wait(w)
            got = w.ask("api.example.test", "AAAA")
            assert got.rcode() == dns.rcode.NOERROR and addresses(got) == [V6]
            assert _no_table_errors(caplog) == 1
            report = topology.apply(policy)
            assert report.method == "full"  # the first apply
            deadline = time.monotonic() + 10
            while _held(topology) != (True, True):  # the cached answers are written again
                assert time.monotonic() < deadline, "the sets were not filled after the apply"
                w.ask("api.example.test", "A")
                w.ask("api.example.test", "AAAA")
                time.sleep(0.2)
            assert connect(topology, V4, 80) == "refused"
            assert _failed(topology) == []


def test_a_failed_write_with_the_table_there_still_fails(topology: Topology) -> None:
    """Fail closed: only the absence of our table lets a failed write pass as "nothing to
    fill"; with the table there (its sets not those written to), the write stays an error."""
    from outguard.kernel.fqdnsets import table_probe  # new here: old code has none

    four, _six = _sets()
    kernel = topology.kernel()
    sets = FqdnSets(kernel, table_probe(kernel))
    topology.apply("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n")
    with pytest.raises(KernelError):
        sets.write([(four, V4, 60)])
    removed = topology.cli("remove")
    assert removed.returncode == 0, removed.stderr
    assert sets.write([(four, V4, 60)]) is False
    assert FqdnSets(kernel).write([]) is True
    with pytest.raises(KernelError):  # no way to tell: an error, as before
        FqdnSets(kernel).write([(four, V4, 60)])


def test_a_refused_delta_says_so_and_keeps_the_name_sets(topology: Topology) -> None:
    """When the kernel refuses the planned delta (here: a chain deleted by hand between plan
    and apply), apply replaces the whole table: it says so (not what `plan` showed), and the
    name sets, made anew, start with the addresses of the resolver's saved cache."""
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=300)
        topology.apply(topology.write_policy(POLICY))
        opts = AgentOptions(policy=None, state_dir=topology.state_dir, netns=topology.server,
                            apply=False, feeds=False)
        with AgentHandle(opts):
            _wait(w)
            _filled(w, topology)
        # the agent saved its resolver's cache when it stopped
        state = StateDir(topology.state_dir)
        plan = make_plan(topology.write_policy("learn: true\n" + POLICY, "b.yaml"), state,
                         topology.kernel())
        assert plan.method == "delta"
        for cmd in ("flush chain inet outguard output", "delete chain inet outguard output"):
            ns.run(topology.server, ["nft", *cmd.split()])
        with state.locked():
            report = execute(plan, topology.kernel())
        assert report.method == "full"
        assert any("refused the planned delta" in w for w in report.warnings), report.warnings
        assert _held(topology) == (True, True)
        assert connect(topology, V4, 80) == "refused"
