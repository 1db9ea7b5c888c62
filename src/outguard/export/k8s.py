"""The `k8s` target: a Kubernetes NetworkPolicy (egress), and the same policy for Cilium
(`k8s_cilium`: CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy) and as an
AdminNetworkPolicy (`k8s_anp`); `-o kind=` picks one, the default writes all four.

Place in the data flow: `Ruleset` → `view.views` → each builder → YAML files in one `Export`
(options: `k8s_options`).

A NetworkPolicy only allows; selecting pods for Egress makes everything else denied. Deny rules
are therefore subtracted from the allow rules: a deny of every port and protocol becomes an
`ipBlock.except`; a port deny that covers all of an allow rule's destinations is subtracted
from its ports; a port deny that covers only some of them removes those destinations from the
rule for every port (it blocks more, never less). What is left as approximation is reported.
DNS to the cluster DNS pods is allowed (see `k8s_options`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from outguard.export.fidelity import Export
from outguard.export.k8s_options import DNS_KEY, OPTIONS, K8sOptions, dump, options
from outguard.export.view import (
    Ledger,
    RuleView,
    common_notes,
    covers,
    default_note,
    merged,
    overlaps,
    views,
)
from outguard.ruleset.ir import Ruleset

__all__ = ["OPTIONS", "export_k8s", "network_policy", "subtract"]

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


def dns_ports() -> list[dict[str, Any]]:
    return [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def network_policy(ruleset: Ruleset, ledger: Ledger, opts: K8sOptions) -> dict[str, Any]:
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
    keys: list[str] = []
    if opts.dns is not None and ruleset.mode != "audit":
        egress.append({"to": [{"namespaceSelector": opts.dns.namespace_selector(),
                               "podSelector": opts.dns.pod_selector()}], "ports": dns_ports()})
        keys.append(DNS_KEY)
        ledger.approx(DNS_KEY, opts.dns_note())
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
        keys.append(view.key)
    if ruleset.mode == "audit":
        egress, keys = [{}], ["default"]  # allow everything: NetworkPolicy has no log-only verdict
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": opts.metadata(keys, namespaced=True),
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}


def export_k8s(ruleset: Ruleset, **raw: str) -> Export:
    """The k8s export: the kinds `-o kind=` asks for (all four by default), one report."""
    from outguard.export.k8s_anp import admin_network_policies  # noqa: PLC0415
    from outguard.export.k8s_cilium import cilium_policy  # noqa: PLC0415

    opts = options(**raw)
    files: dict[str, str] = {}
    forms: list[tuple[str, Ledger]] = []
    logs = {"NetworkPolicy": "the CNI's flow logs, if any",
            "CiliumNetworkPolicy": "Cilium's policy audit mode and Hubble",
            "CiliumClusterwideNetworkPolicy": "Cilium's policy audit mode and Hubble",
            "AdminNetworkPolicy": "the implementation's logs, if any"}
    wanted = {"networkpolicy": "NetworkPolicy", "cilium": "CiliumNetworkPolicy",
              "cilium-clusterwide": "CiliumClusterwideNetworkPolicy",
              "adminnetworkpolicy": "AdminNetworkPolicy"}
    for key, kind in wanted.items():
        if opts.kind not in ("all", key):
            continue
        ledger = Ledger()
        if kind == "NetworkPolicy":
            docs = [network_policy(ruleset, ledger, opts)]
        elif kind == "AdminNetworkPolicy":
            docs = admin_network_policies(ruleset, ledger, opts)
        else:
            docs = [cilium_policy(ruleset, ledger, opts, clusterwide=kind != "CiliumNetworkPolicy")]
        default_note(ruleset, ledger, kind, logs=logs[kind])
        files[f"k8s-{kind.lower()}.yaml"] = dump(*docs)
        forms.append((kind, ledger))
    order = [DNS_KEY] + [v.key for v in views(ruleset)] + ["default"]
    fidelity, warnings = merged(forms, order)
    return Export("k8s", files, fidelity, warnings)
