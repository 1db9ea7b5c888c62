"""`compile`, `explain` and `check` with `--netns` (issue 14): names resolve through the
namespace's /etc/netns/NAME/resolv.conf, and with a `dns:` section `explain` asks no resolver.

The server namespace gets its own resolv.conf (`ip netns exec` bind-mounts /etc/netns/NAME/*
over /etc/*) naming a real dnsmasq in the peer namespace, authoritative for example.test. The
machine's own resolver knows none of these names, so an answer that holds their addresses can
only come from inside the namespace; dnsmasq's query log shows every question that reached it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.dnsenv import UPSTREAM, DnsWorld, dns_world
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
allow:
  - name: api
    to: [api.example.test]
    ports: [443]
    proto: tcp
  - name: partners
    to: ["@partners"]
    ports: [443]
    proto: tcp
deny:
  - name: c2
    to: [c2.example.test]
lists:
  partners: [partner.example.test]
"""
DNS = 'dns: {listen: "127.0.0.1:53", upstreams: ["' + UPSTREAM + '"]}\n'
RECORDS = {"api.example.test": ["203.0.113.30"], "partner.example.test": ["203.0.113.31"],
           "c2.example.test": ["198.51.100.99"]}


@pytest.fixture
def world(topology: Topology) -> Iterator[DnsWorld]:
    etc = Path("/etc/netns") / topology.server
    assert topology.server.startswith("ogt-") and not etc.exists()
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq()
        etc.mkdir(parents=True)
        try:
            (etc / "resolv.conf").write_text(f"nameserver {UPSTREAM}\n")
            yield w
        finally:
            shutil.rmtree(etc)


def test_explain_resolves_through_the_namespaces_resolver(world: DnsWorld) -> None:
    path = world.topo.write_policy(POLICY)
    proc = world.topo.cli("explain", str(path), "--to", "api.example.test", "--port", "443")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == \
        "ALLOW  api.example.test (203.0.113.30) port 443/tcp: accepted by allow:api"
    assert world.upstream_queries("api.example.test") >= 1


def test_compile_and_check_resolve_through_the_namespaces_resolver(world: DnsWorld) -> None:
    path = world.topo.write_policy(POLICY)
    out = world.topo.state_dir.parent / "ipt"
    proc = world.topo.cli("compile", str(path), "--target", "iptables", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rules = (out / "rules.v4").read_text()
    assert "-d 203.0.113.30 " in rules and "-d 198.51.100.99 " in rules
    assert "og-partners-" in rules and "add og-partners-" in (out / "ipsets").read_text()
    proc = world.topo.cli("compile", str(path))
    assert proc.returncode == 0 and "203.0.113.31" in proc.stdout, proc.stderr
    proc = world.topo.cli("check", str(path))
    assert proc.returncode == 0, proc.stderr


def test_with_dns_explain_asks_no_resolver(world: DnsWorld) -> None:
    """Was: explain resolved the name through the system resolver, outguard's own after `dns
    install`: a name it refuses failed explain and became an incident of outguard itself."""
    path = world.topo.write_policy(POLICY + DNS)
    for name, first in (
            ("partner.example.test",
             "ALLOW  partner.example.test port 443/tcp: accepted by allow:partners"),
            ("c2.example.test", "DENY   c2.example.test port 443/tcp: dropped by deny:c2")):
        proc = world.topo.cli("explain", str(path), "--to", name, "--port", "443")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == first
        assert world.upstream_queries(name) == 0


def test_with_dns_compile_resolves_at_export_time_in_the_namespace(world: DnsWorld) -> None:
    path = world.topo.write_policy(POLICY + DNS)
    proc = world.topo.cli("compile", str(path), "--target", "ufw")
    assert proc.returncode == 0, proc.stderr
    rules = _ufw_rules(proc.stdout)
    assert any(r.startswith("allow out proto tcp to 203.0.113.31 port 443") for r in rules), rules
    assert any(r.startswith("deny out log to 198.51.100.99") for r in rules), rules
    assert "(api.example.test → 203.0.113.30); export again" in proc.stderr


FEED_POLICY = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
deny:
  - name: threats
    to: ["@feed:local-bad"]
feeds:
  local-bad: {file: bad.txt}
"""


def test_read_only_commands_write_no_feed_copies(topology: Topology) -> None:
    """`check`, `explain`, `compile` and `plan` stored `feeds/<name>/{good.bin,meta.json}` of a
    `file:` feed in the state directory: only `apply` (and `feeds update`) may."""
    topo = topology
    (topo.state_dir.parent / "bad.txt").write_text("198.51.100.7\n2001:db8:bad::7\n")
    path = str(topo.write_policy(FEED_POLICY))
    for args in (("check", path), ("explain", path, "--to", "198.51.100.7"),
                 ("compile", path), ("plan", path)):
        proc = topo.cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        feeds = topo.state_dir / "feeds"
        assert not feeds.exists() or not any(feeds.rglob("*")), (args, list(feeds.rglob("*")))
    assert topo.cli("apply", path).returncode == 0
    assert (topo.state_dir / "feeds" / "local-bad" / "good.bin").exists()


def test_check_warns_when_the_policy_blocks_the_namespaces_name_server(world: DnsWorld) -> None:
    """Without `dns:`, an enforcing policy blocked resolv.conf's name server: every lookup
    failed, and the next apply could resolve none of the policy's names."""
    topo = world.topo
    proc = topo.cli("check", str(topo.write_policy(POLICY)))
    assert proc.returncode == 0, proc.stderr
    assert (f"name server {UPSTREAM} (/etc/netns/{topo.server}/resolv.conf)" in proc.stderr
            and f"`- {{name: dns, to: [{UPSTREAM}], ports: [53]}}`" in proc.stderr), proc.stderr
    fixed = POLICY.replace("deny:", f"  - {{name: dns, to: [{UPSTREAM}], ports: [53]}}\ndeny:")
    proc = topo.cli("check", str(topo.write_policy(fixed, "fixed.yaml")))
    assert proc.returncode == 0 and "name server" not in proc.stderr, proc.stderr


def _ufw_rules(program: str) -> list[str]:
    """The ufw rules the exported program makes, as `ufw` arguments (its RULES table)."""
    start = program.index('RULES = json.loads(r"""') + len('RULES = json.loads(r"""')
    return [" ".join(rule) for rule in json.loads(program[start:program.index('"""', start)])]
