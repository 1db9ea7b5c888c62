"""The probe tables of the export evaluation (issue 17): per policy, the outbound attempts whose
fate `decide` and each target's evaluator must agree on (`tests/export/evaluation.py`).

Policies: every golden policy of the export tests (`cloud_inputs.policy_names`), the policies in
`tests/export/eval_policies/` (names and wildcards in lists, with and without `dns:`, audit
mode, colliding names) and `big-list` (a 6,000-entry list, made here: too big for a file).

Probes are derived from each policy's rules, so a new rule is probed without editing a table:
per rule, addresses inside each of its destinations (first and last of a network, and the one
after it), its first and last port and the one after, its protocol and another, its owner's uid
and root; per host name, the address it had at export time and a FRESH one (the name moved: the
DNS answer a client gets later); per wildcard, a name one and two labels below it and the bare
domain; and, for every policy, unlisted addresses, DNS to an upstream and to the cluster's DNS
(KUBE_DNS), and ICMP echo. For `cases` the hand-made decision table (`tests/cases.py`) is added.

Addresses are documentation addresses that the kernel tests' topology can route (never the
server's own, nor the link's network or broadcast address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path

from outguard.export.names import for_export, rule_names
from outguard.policy.load import Policy, load_policy, load_text
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.lower import lower
from tests.cases import CASE_NOW, CASE_POLICY, CASES
from tests.export.cloud_inputs import DNS, LAB_POLICY, POLICY_DIR, policy_names, resolver
from tests.export.evaluators import Probe, Proto
from tests.nftables.helpers import FIXED_NOW

EVAL_DIR = Path(__file__).parent / "eval_policies"
FRESH4, FRESH6 = "192.0.2.177", "2001:db8:77::177"  # where a name "moved" after the export
KUBE_DNS = "192.0.2.153"  # the cluster DNS (kube-dns / CoreDNS) pod, for the k8s evaluators
UPSTREAM = "192.0.2.53"  # the `dns.upstreams` of the example policies
UNLISTED = ("203.0.113.222", "2001:db8:4::1", "198.51.100.200")
_NOT_PROBED = {"192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.255", "2001:db8::", "2001:db8::2"}
DOC_NETS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
PER_SOURCE = 3  # addresses probed per list or inline destination (a 6,000-entry list: a sample)
BIG_V4 = 700  # big-list: every routable documentation IPv4 address it can hold, then IPv6
BIG_TOTAL = 6000


def big_list_policy() -> str:
    """A 6,000-entry deny list (IPv4 and IPv6 addresses and a few networks) and a few allows:
    the size that made the ufw export 6,213 commands (issue 17)."""
    entries = [f"198.51.100.{i}" for i in range(1, 255)] + [f"203.0.113.{i}" for i in range(1, 255)]
    entries += [f"192.0.2.{i}" for i in range(3, 195) if f"192.0.2.{i}" not in (UPSTREAM, KUBE_DNS,
                                                                            FRESH4)]
    entries = entries[:BIG_V4]
    i = 0
    while len(entries) < BIG_TOTAL - 4:
        entries.append(f"2001:db8:b16:{i // 4096:x}::{i % 4096 + 1:x}")
        i += 1
    entries += ["2001:db8:b17::/48", "2001:db8:b18::/64", "2001:db8:b19::/56", "2001:db8:b1a::/48"]
    body = "\n".join(f'    - "{e}"' for e in entries)
    return f"""\
version: 1
deny:
  - name: big
    to: ["@big"]
allow:
  - name: web
    to: [203.0.113.10, 198.51.100.10, "2001:db8:1::10"]
    ports: [443]
    proto: tcp
  - name: ntp
    to: [203.0.113.0/24]
    ports: [123]
    proto: udp
lists:
  big:
{body}
"""


def eval_policy_names() -> list[str]:
    """Every policy the evaluation runs over."""
    return [*policy_names(), *sorted(p.stem for p in EVAL_DIR.glob("*.yaml")), "big-list"]


def _now(name: str) -> datetime:
    return CASE_NOW if name == "cases" else FIXED_NOW


@cache
def load(name: str) -> Policy:
    if name == "cases":
        return load_text(CASE_POLICY)
    if name == "big-list":
        return load_text(big_list_policy(), "big-list.yaml")
    if name == "lab-policy":
        return load_policy(LAB_POLICY)
    path = EVAL_DIR / f"{name}.yaml"
    return load_policy(path if path.exists() else POLICY_DIR / f"{name}.yaml")


@cache
def truth(name: str) -> Ruleset:
    """What outguard means by the policy: `lower` as `apply` and `explain` see it (names
    resolved now without `dns:`, resolver-filled sets with it)."""
    return lower(load(name), resolver=resolver, now=_now(name))


@cache
def exported(name: str) -> Ruleset:
    """What the exporters get (`compile --target`: every name resolved at export time)."""
    return for_export(load(name), resolver=resolver, now=_now(name))


def now(name: str) -> datetime:
    return _now(name)


def _probeable(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return addr not in _NOT_PROBED and any(ip.version == n.version and ip in n for n in DOC_NETS)


def _net_samples(text: str) -> Iterator[str]:
    net = ipaddress.ip_network(text if "/" in text else f"{text}/{128 if ':' in text else 32}")
    if net.num_addresses == 1:
        yield str(net.network_address)
        return
    yield str(net.network_address + 1)
    yield str(net.broadcast_address - (1 if net.version == 6 else 0))
    after = net.broadcast_address + 1
    yield str(after)


def _addresses(rs: Ruleset, rule: IRRule) -> list[str]:
    if rule.any_destination:
        return list(UNLISTED[:2])
    out: dict[str, None] = {}
    for key in ((rule.inline,) if rule.inline else ()) + rule.lists:
        el = rs.sources[key].elements
        for group in (el.v4 + el.v4_nets, el.v6 + el.v6_nets):
            picked = list(group[:PER_SOURCE]) + list(group[-1:])
            for text in picked:
                out.update(dict.fromkeys(a for a in _net_samples(text) if _probeable(a)))
    return list(out)


def _ports(rule: IRRule) -> list[int]:
    if not rule.match.ports:
        return [443]
    (lo, hi), (_lo2, last) = rule.match.ports[0], rule.match.ports[-1]
    return list(dict.fromkeys(p for p in (lo, hi, last, last + 1, lo - 1) if 1 <= p <= 65535))


def _protos(rule: IRRule) -> list[Proto]:
    proto = rule.match.proto
    if proto == "icmp":
        return ["icmp", "tcp"]
    if proto == "any":
        return ["tcp", "udp"] if rule.match.ports else ["tcp", "udp", "icmp"]
    return [proto, "udp" if proto == "tcp" else "tcp"]


def _uids(rule: IRRule) -> list[int]:
    m = rule.match
    return [0, 65534] if (m.uid, m.gid, m.cgroup) != (None, None, None) else [0]


def rule_probes(rs: Ruleset, rule: IRRule) -> list[Probe]:
    out: list[Probe] = []
    why = rule.counter
    ports, protos, uids = _ports(rule), _protos(rule), _uids(rule)
    for addr in _addresses(rs, rule):
        for proto in protos:
            for port in ([None] if proto == "icmp" else ports):
                for uid in uids:
                    out.append(Probe(addr, port, proto, uid, why=why))
    names = rule_names(rs, rule)
    first: int | None = ports[0]
    proto0 = protos[0]
    if proto0 == "icmp":
        first = None
    for name in names.names:
        known = [a for a in DNS.get(name, []) if _probeable(a)][:2]
        for addr in [*known, FRESH4, FRESH6]:
            for uid in uids:
                out.append(Probe(addr, first, proto0, uid, name=name, why=f"{why} by name"))
    for wild in names.wildcards:
        base = wild[2:]
        for name in (f"a.{base}", f"a.b.{base}", base):
            out.append(Probe(FRESH4, first, proto0, 0, name=name, why=f"{why} wildcard {wild}"))
    return out


def common_probes() -> list[Probe]:
    out = [Probe(UNLISTED[0], 80), Probe(UNLISTED[1], 443), Probe(UNLISTED[2], 8080, "udp"),
           Probe(UNLISTED[0], None, "icmp", why="ICMP echo, unlisted"),
           Probe(UNLISTED[1], None, "icmp", why="ICMPv6 echo, unlisted")]
    for proto in ("udp", "tcp"):
        out.append(Probe(UPSTREAM, 53, proto, why="DNS to an upstream"))  # type: ignore[arg-type]
        out.append(Probe(KUBE_DNS, 53, proto, why="DNS to the cluster DNS"))  # type: ignore[arg-type]
    out.append(Probe(UPSTREAM, 53, "udp", 65534, why="DNS as nobody"))
    return out


@cache
def probes(name: str) -> tuple[Probe, ...]:
    """The probe table of policy `name` (duplicates removed, order kept)."""
    rs = exported(name)
    out: list[Probe] = []
    for rule in rs.rules():
        out.extend(rule_probes(rs, rule))
    out.extend(common_probes())
    if name == "cases":
        out.extend(Probe(c.dst, c.port, c.proto, c.uid, why=c.id) for c in CASES)
    seen: dict[tuple[object, ...], Probe] = {}
    for p in out:
        seen.setdefault((p.dst, p.port, p.proto, p.uid, p.name), p)
    return tuple(seen.values())


def policy_path(name: str) -> Path:
    """The policy's file (for the CLI); `cases` and `big-list` are written by the caller."""
    if name == "lab-policy":
        return LAB_POLICY
    path = EVAL_DIR / f"{name}.yaml"
    return path if path.exists() else POLICY_DIR / f"{name}.yaml"


def policy_text(name: str) -> str:
    if name == "cases":
        return CASE_POLICY
    if name == "big-list":
        return big_list_policy()
    return policy_path(name).read_text()
