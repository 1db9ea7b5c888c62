"""A kernel sample of issue 15's property: ≥ 200 real flows whose verdict equals `decide()`.

tests/ruleset/test_index.py proves resolver lookup ≡ `decide` ≡ the compiled table over
thousands of random policies without a kernel; this test checks the last step for real. One
policy with `dns:`, names in a rule's own `to` and in lists (wildcards too), users, a deny by
list name for some ports, the resolver's upstream, and the host's own addresses. Every name gets
an address of its own, put into the kernel sets the resolver's `NamePolicy` names (what an
answer does); then a fixed-seed sample of flows (names and addresses, tcp and udp, root and
nobody) is sent from the topology's server namespace. For each flow the kernel's outcome and the
counter that moved must be what `decide(ruleset, flow, local=<the host's addresses>)` says.

The host's own addresses (192.0.2.2, 2001:db8::2) leave through `lo` and are accepted before any
rule: `decide` says so only when told the local addresses (issue 15 §1, `oif lo`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from outguard.kernel.fqdnsets import commands
from outguard.policy.load import load_text
from outguard.ruleset.decide import Decision, Flow, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import RuleKey, SetName
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy
from tests.kernel.topology import DROPPED, PASSED, SERVER4, SERVER6, Probe, Topology, deltas

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
mode: enforce
deny:
  - name: c2
    to: [c2.example.test, "*.evil.example.test", 198.51.100.0/24]
  - name: no-smtp
    ports: [25]
    proto: tcp
  - name: nobody-no-ldap
    to: ["@ldap"]
    ports: [389]
    for: {user: nobody}
allow:
  - name: via-list
    to: ["@apis"]
    ports: [443]
    proto: tcp
  - name: api-any
    to: [api.example.test]
  - name: mirrors
    to: ["@mirrors"]
    ports: [80, 443]
  - name: root-ssh
    to: [203.0.113.0/25]
    ports: [22]
    proto: tcp
    for: {user: 0}
  - name: directory
    to: ["@ldap"]
lists:
  apis: [api2.example.test, "*.cdn.example.test", 203.0.113.10]
  mirrors: [mirror.example.test, 203.0.113.200, "2001:db8:2::/48"]
  ldap: [dir.example.test, 203.0.113.40]
dns:
  listen: "127.0.0.1:53"
  upstreams: ["192.0.2.53"]
  user: nobody
options:
  default_action: drop
  log_rate: 1000/second
"""

# each name's answer: an address of its own (IPv4 and IPv6), as the resolver would put it
NAMES = ("api.example.test", "api2.example.test", "a.cdn.example.test", "cdn.example.test",
         "mirror.example.test", "dir.example.test", "c2.example.test", "x.evil.example.test",
         "unlisted.example.test")
ANSWERS = {n: (f"203.0.113.{130 + i}", f"2001:db8:9::{i + 1}") for i, n in enumerate(NAMES)}
ADDRESSES = ("203.0.113.10", "203.0.113.200", "2001:db8:2::5", "198.51.100.7", "203.0.113.40",
             "203.0.113.60", "2001:db8:4::1", "192.0.2.53", SERVER4, SERVER6)
LOCAL = (SERVER4, SERVER6)
PORTS = ((22, "tcp"), (25, "tcp"), (53, "udp"), (53, "tcp"), (80, "tcp"), (80, "udp"),
         (389, "tcp"), (443, "tcp"), (443, "udp"), (853, "tcp"), (8080, "tcp"))
UIDS = (0, 65534)
SAMPLE = 220
BATCH = 75  # flows sent at once


def _flows() -> list[tuple[str, str | None, int, str, int]]:
    """(address, name or None, port, proto, uid), a fixed-seed sample."""
    dests = [(a, n) for n in NAMES for a in ANSWERS[n]] + [(a, None) for a in ADDRESSES]
    every = [(a, n, p, proto, uid) for a, n in dests for p, proto in PORTS for uid in UIDS]
    return random.Random(15).sample(every, SAMPLE)


def _decisions(rs: Ruleset, names: NamePolicy,
               flows: list[tuple[str, str | None, int, str, int]]) -> list[Decision]:
    now = datetime.now(UTC)
    out = []
    for addr, name, port, proto, uid in flows:
        answered = name is not None and names.lookup(name).action == "resolve"
        if name is not None and not answered:  # no answer: the name's address is a bare one
            by_name = decide(rs, Flow(name=name, port=port, proto=proto, uid=uid, gid=uid),  # type: ignore[arg-type]
                             now, local=LOCAL)
            assert by_name.action == "deny", (name, by_name)
        flow = Flow(dst=addr, name=name if answered else None, port=port, proto=proto,  # type: ignore[arg-type]
                    uid=uid, gid=uid)
        out.append(decide(rs, flow, now, local=LOCAL))
    return out


def _counter(d: Decision) -> str | None:
    return None if d.rule.startswith("builtin:") else RuleKey.parse(d.rule).counter


def test_a_sample_of_real_flows_gets_what_decide_says(topology: Topology) -> None:
    rs = lower(load_text(POLICY, "sample-policy.yaml"))
    names = NamePolicy.of(rs)
    flows = _flows()
    assert len(flows) >= 200
    topology.add_addresses(*[a for a in {*ADDRESSES, *sum(ANSWERS.values(), ())}
                             if a not in LOCAL])
    topology.apply(POLICY)
    # the resolver's answers: each name's addresses into the sets its NamePolicy verdict names
    items = []
    for name in NAMES:
        verdict = names.lookup(name)
        if verdict.action == "resolve":
            for addr in ANSWERS[name]:
                version = 6 if ":" in addr else 4
                items += [(str(SetName.fqdn(base, version)), addr, 3600) for base in verdict.sets]
    assert items, "no name of the sample resolves"
    topology.kernel().run_json({"nftables": commands(items)})

    decisions = _decisions(rs, names, flows)
    assert {d.rule for d in decisions} >= {"builtin:loopback", "builtin:dns", "default",
                                           "allow:via-list", "allow:api-any", "deny:c2",
                                           "deny:nobody-no-ldap", "allow:directory"}
    problems: list[str] = []
    # every flow's verdict is its own socket's outcome; the counters are checked per batch:
    # each moved by exactly as many packets as flows of the batch expect it to
    for start in range(0, len(flows), BATCH):
        batch = range(start, min(start + BATCH, len(flows)))
        before = topology.counters()
        outcomes = topology.probe([Probe(flows[i][0], flows[i][2], flows[i][3], flows[i][4])
                                   for i in batch])
        moved = deltas(before, topology.counters())
        for i, outcome in zip(batch, outcomes, strict=True):
            d, (addr, name, port, proto, uid) = decisions[i], flows[i]
            passed = outcome in PASSED
            if not (passed or outcome in DROPPED) or passed != (d.verdict == "accept"):
                problems.append(f"{proto}/{port} to {addr} ({name or '-'}) as uid {uid}: decide"
                                f" {d.verdict} by {d.rule}; kernel {outcome}")
        expected = Counter(c for i in batch if (c := _counter(decisions[i])) is not None)
        if moved != dict(expected):
            problems.append(f"counters of flows {start}..{batch[-1]}: decide expects"
                            f" {dict(expected)}, the kernel moved {moved}")
    assert not problems, f"{len(problems)} of {len(flows)} flows disagree:\n" + "\n".join(problems)


def test_explain_says_the_hosts_own_address_is_loopback(topology: Topology) -> None:
    """The kernel accepts traffic to the host's own addresses on `oif lo`; `explain --netns`
    reads the namespace's addresses and says so (it said DENY by default before)."""
    policy = topology.write_policy(POLICY)
    topology.apply(POLICY)
    assert topology.probe([Probe(SERVER4, 8080), Probe(SERVER6, 8080, "udp")]) == \
        ["refused", "refused"]  # answered by the host itself: the packets passed
    for address in LOCAL:
        proc = topology.cli("explain", str(policy), "--to", address, "--port", "8080", "--json")
        assert proc.returncode == 0, proc.stderr
        answers = json.loads(proc.stdout)
        assert {(a["verdict"], a["rule"]) for a in answers} == {("accept", "builtin:loopback")}
    proc = topology.cli("explain", str(policy), "--to", "203.0.113.60", "--port", "8080")
    assert proc.returncode == 0 and proc.stdout.startswith("DENY"), proc.stdout
