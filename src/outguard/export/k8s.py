"""The `k8s` export target: a Kubernetes NetworkPolicy (egress) and a CiliumNetworkPolicy.

Place in the data flow: `Ruleset` → `view.views` → `k8s` (NetworkPolicy) and `k8s_cilium`
(CiliumNetworkPolicy) → two YAML documents in one `Export`.

A NetworkPolicy only allows; selecting pods for Egress makes everything else denied. Deny rules
are therefore subtracted from the allow rules: a deny of every port and protocol becomes an
`ipBlock.except`; a port deny that covers all of an allow rule's destinations is subtracted
from its ports; a port deny that covers only some of them removes those destinations from the
rule for every port (it blocks more, never less). What is left as approximation is reported.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml

from outguard.export.fidelity import Export
from outguard.export.k8s_cilium import cilium_policy
from outguard.export.view import Ledger, RuleView, common_notes, covers, default_note, overlaps, views
from outguard.ruleset.ir import Ruleset

FULL = ((1, 65535),)
Ranges = tuple[tuple[int, int], ...]


def subtract(ranges: Ranges, minus: Ranges) -> Ranges:
    """Port ranges in `ranges` and not in `minus`."""
    out = list(ranges)
    for lo_m, hi_m in minus:
        nxt: list[tuple[int, int]] = []
        for lo, hi in out:
            if hi < lo_m or lo > hi_m:
                nxt.append((lo, hi))
                continue
            if lo < lo_m:
                nxt.append((lo, lo_m - 1))
            if hi > hi_m:
                nxt.append((hi_m + 1, hi))
        out = nxt
    return tuple(out)


def _intersects(a: Ranges, b: Ranges) -> bool:
    return any(lo <= hi2 and lo2 <= hi for lo, hi in a for lo2, hi2 in b)


@dataclass
class Entry:
    """One allow rule on its way to a NetworkPolicy egress entry."""

    l4: dict[str, Ranges] | None  # protocol → ports; None: every protocol and port
    cidrs: list[str]
    excepts: set[str] = field(default_factory=set)


def _entry(view: RuleView) -> Entry:
    ports = view.ports or FULL
    if view.proto == "any":
        l4 = {"TCP": ports, "UDP": ports} if view.ports else None
    else:
        l4 = {view.proto.upper(): ports}
    return Entry(l4, list(view.cidrs(4) + view.cidrs(6)))


def _apply_deny(entry: Entry, allow: RuleView, deny: RuleView, ledger: Ledger) -> None:
    d_cidrs = list(deny.cidrs(4) + deny.cidrs(6))
    if not d_cidrs or not overlaps(entry.cidrs, d_cidrs):
        return
    if deny.proto == "any" and not deny.ports:
        entry.excepts.update(d_cidrs)
        return
    d_protos = {"TCP", "UDP"} if deny.proto == "any" else {deny.proto.upper()}
    d_ports = deny.ports or FULL
    if entry.l4 is not None:
        hit = [p for p in d_protos if p in entry.l4
               and (p == "ICMP" or _intersects(entry.l4[p], d_ports))]
        if not hit:
            return
    if not covers(d_cidrs, entry.cidrs):
        entry.excepts.update(d_cidrs)
        ledger.approx(allow.key, f"the destinations of {deny.key} are left out for every port and"
                                 " protocol: NetworkPolicy cannot subtract ports for part of a rule")
        return
    if entry.l4 is None:
        entry.l4 = {"TCP": FULL, "UDP": FULL}
        ledger.approx(allow.key, f"TCP and UDP only, so that {deny.key} can be subtracted:"
                                 " NetworkPolicy cannot subtract ports from every protocol")
    for proto in d_protos & set(entry.l4):
        entry.l4[proto] = subtract(entry.l4[proto], d_ports) if proto != "ICMP" else ()
    entry.l4 = {p: r for p, r in entry.l4.items() if r}


def _ip_blocks(entry: Entry) -> list[dict[str, Any]]:
    blocks = []
    excepts = [ipaddress.ip_network(e) for e in sorted(entry.excepts)]
    for text in entry.cidrs:
        net = ipaddress.ip_network(text)
        same = [e for e in excepts if e.version == net.version and e.overlaps(net)]
        if any(net.subnet_of(e) for e in same):  # type: ignore[arg-type]
            continue  # wholly denied
        block: dict[str, Any] = {"cidr": text}
        if same:
            block["except"] = [str(e) for e in same]
        blocks.append({"ipBlock": block})
    return blocks


def _ports(l4: dict[str, Ranges] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for proto, ranges in (l4 or {}).items():
        for lo, hi in ranges:
            if (lo, hi) == FULL[0]:
                out.append({"protocol": proto})
            else:
                out.append({"protocol": proto, "port": lo} | ({"endPort": hi} if hi != lo else {}))
    return out


def network_policy(ruleset: Ruleset, ledger: Ledger, name: str) -> dict[str, Any]:
    denies = []
    for view in views(ruleset):
        if view.deny and common_notes(view, ledger, "NetworkPolicy", mode=ruleset.mode):
            if view.fqdns and not view.has_addresses:
                ledger.drop(view.key, "NetworkPolicy cannot match host names")
                continue
            ledger.note(view.key, "exact", "subtracted from the allow rules (NetworkPolicy only"
                                           " allows)")
            if view.wildcards:
                ledger.approx(view.key, "wildcards left out: NetworkPolicy cannot match names")
            denies.append(view)
    egress: list[dict[str, Any]] = []
    for view in views(ruleset):
        if view.deny or not common_notes(view, ledger, "NetworkPolicy", mode=ruleset.mode):
            continue
        if view.proto == "icmp":
            ledger.drop(view.key, "NetworkPolicy cannot select ICMP (ports are TCP, UDP or SCTP)")
            continue
        if not view.has_addresses:
            ledger.drop(view.key, "NetworkPolicy cannot match host names")
            continue
        if view.wildcards:
            ledger.approx(view.key, "wildcards left out: NetworkPolicy cannot match names")
        entry = _entry(view)
        for deny in denies:
            _apply_deny(entry, view, deny, ledger)
        blocks = _ip_blocks(entry)
        if not blocks or entry.l4 == {}:
            ledger.note(view.key, "exact", "wholly shadowed by deny rules: nothing of it is left")
            continue
        item: dict[str, Any] = {"to": blocks}
        if entry.l4 is not None:
            item["ports"] = _ports(entry.l4)
        egress.append(item)
    if ruleset.mode == "audit":
        egress = [{}]  # allow everything: NetworkPolicy has no log-only verdict
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "outguard"}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}


def export_k8s(ruleset: Ruleset, name: str = "outguard-egress") -> Export:
    np_ledger, cilium_ledger = Ledger(), Ledger()
    np = network_policy(ruleset, np_ledger, name)
    cnp = cilium_policy(ruleset, cilium_ledger, name)
    default_note(ruleset, np_ledger, "NetworkPolicy", logs="the CNI's flow logs, if any")
    default_note(ruleset, cilium_ledger, "Cilium", logs="Cilium's policy audit mode and Hubble")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"default": 1 << 30}
    merged = Ledger()  # one entry per rule: the worse of the two, with both explanations
    for kind, ledger in (("NetworkPolicy", np_ledger), ("CiliumNetworkPolicy", cilium_ledger)):
        for item in ledger.fidelity():
            merged.note(item.rule, item.level, f"{kind} {item.level}"
                        + (f": {item.how}" if item.how else ""))
    fidelity = sorted(merged.fidelity(), key=lambda f: order[f.rule])
    warnings = [f"NetworkPolicy: {w}" for w in np_ledger.warnings]
    warnings += [f"CiliumNetworkPolicy: {w}" for w in cilium_ledger.warnings]
    files = {"k8s-networkpolicy.yaml": _yaml(np), "k8s-ciliumnetworkpolicy.yaml": _yaml(cnp)}
    return Export("k8s", files, fidelity, warnings)


class _NoAliases(yaml.SafeDumper):
    """Shared sub-objects are written out in full: kubectl users read these files."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_NoAliases, sort_keys=False)
