"""The CiliumNetworkPolicy half of the `k8s` target (cilium.io/v2).

Place in the data flow: `Ruleset` → `view.views` → one CiliumNetworkPolicy dict, which `k8s`
puts next to the plain NetworkPolicy.

Cilium has what NetworkPolicy lacks: `egressDeny` (deny rules win over allow rules, as in
outguard), `toFQDNs` for host names and wildcards (through Cilium's DNS proxy, so an allow for
DNS to kube-dns with a `dns` rule is added when names are used), and ICMP by type. Deny rules
cannot use `toFQDNs`, so their names keep only the addresses resolved at export time.
"""

from __future__ import annotations

from typing import Any

from outguard.export.view import Ledger, RuleView, chunks, common_notes, views
from outguard.ruleset.ir import Ruleset

MAX_PORTS = 40  # ports per toPorts entry (the CRD's maxItems)
KUBE_DNS = {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                            "k8s:k8s-app": "kube-dns"}}


def _to_ports(view: RuleView) -> list[dict[str, Any]]:
    protos = {"tcp": "TCP", "udp": "UDP", "any": "ANY"}
    if not view.ports or view.proto == "icmp":
        return []
    ports = [{"port": str(lo), "protocol": protos[view.proto]} | ({"endPort": hi} if hi != lo else {})
             for lo, hi in view.ports]
    return [{"ports": list(part)} for part in chunks(ports, MAX_PORTS)]


def _l4(view: RuleView, ledger: Ledger) -> dict[str, Any]:
    if view.proto == "icmp":
        ledger.approx(view.key, "ICMP echo requests only (types 8 and 128): Cilium selects ICMP"
                                " by type")
        return {"icmps": [{"fields": [{"family": "IPv4", "type": 8},
                                      {"family": "IPv6", "type": 128}]}]}
    if view.proto != "any" and not view.ports:
        return {"toPorts": [{"ports": [{"port": "0", "protocol": view.proto.upper()}]}]}
    ports = _to_ports(view)
    return {"toPorts": ports} if ports else {}


def _destinations(view: RuleView) -> list[dict[str, Any]]:
    if view.any_destination:
        return [{"toEntities": ["all"]}]
    cidrs = [{"cidr": c} for c in view.v4 + view.v6]
    return [{"toCIDRSet": cidrs}] if cidrs else []


def cilium_policy(ruleset: Ruleset, ledger: Ledger, name: str) -> dict[str, Any]:
    egress: list[dict[str, Any]] = []
    deny: list[dict[str, Any]] = []
    fqdns = False
    for view in views(ruleset):
        if not common_notes(view, ledger, "Cilium", mode=ruleset.mode):
            continue
        l4 = _l4(view, ledger)
        rules = [d | l4 for d in _destinations(view)]
        if view.deny:
            if view.fqdns:
                ledger.approx(view.key, "egressDeny cannot use toFQDNs: "
                              + ("names keep their export-time addresses" if view.names else "")
                              + ("; " if view.names and view.wildcards else "")
                              + ("wildcards left out" if view.wildcards else ""))
                if not rules:
                    ledger.drop(view.key, "only wildcard names, which egressDeny cannot hold")
            deny.extend(rules)
            continue
        if view.fqdns:
            fqdns = True
            names = ([{"matchName": n} for n in view.names]
                     + [{"matchPattern": w} for w in view.wildcards])
            rules.append({"toFQDNs": names} | l4)
            ledger.approx(view.key, "names through toFQDNs: Cilium's DNS proxy must see the"
                                    " lookups, so DNS to kube-dns is allowed")
        egress.extend(rules)
    if ruleset.mode == "audit":
        egress.append({"toEntities": ["all"]})
    if fqdns:
        egress.insert(0, {"toEndpoints": [KUBE_DNS], "toPorts": [{
            "ports": [{"port": "53", "protocol": "ANY"}],
            "rules": {"dns": [{"matchPattern": "*"}]}}]})
        ledger.warn("added an allow for DNS to kube-dns (needed for toFQDNs)")
    # explicit, so that a policy of deny rules only still denies by default (Cilium >= 1.15),
    # and ingress is left to whatever else selects the pods
    spec: dict[str, Any] = {"endpointSelector": {},
                            "enableDefaultDeny": {"egress": True, "ingress": False}}
    if egress:
        spec["egress"] = egress
    if deny:
        spec["egressDeny"] = deny
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "outguard"}},
            "spec": spec}
