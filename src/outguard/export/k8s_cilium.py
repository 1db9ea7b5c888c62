"""The Cilium half of the `k8s` target: CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
(cilium.io/v2; the same spec, one namespaced, one for the whole cluster).

Place in the data flow: `Ruleset` → `view.views` → one policy dict, which `k8s` writes next to
the other kinds.

Cilium has what NetworkPolicy lacks: `egressDeny` (deny rules win over allow rules, as in
outguard), `toFQDNs` for host names and wildcards, and ICMP by type. toFQDNs works through
Cilium's DNS proxy, so the DNS allow to the cluster DNS carries an L7 `dns` rule (every name:
the proxy must see the lookups; outguard's policy decides the connections). Wildcards: outguard's
`*.example.test` matches names below it at any depth; Cilium's `*.` matches one label only, and
`**.` (any depth) exists from Cilium 1.19 on (`-o cilium-version`): for 1.19+ wildcards are
written `**.example.test`, before that `*.example.test` and reported. Deny rules cannot use
toFQDNs, so their names keep only the addresses resolved at export time. The clusterwide policy
selects every pod outside the cluster DNS's namespace (kube-system by default), which it must
not cut off from its upstream servers.
"""

from __future__ import annotations

import json
from typing import Any

from outguard.export.k8s_options import DNS_KEY, K8sOptions
from outguard.export.view import Ledger, RuleView, chunks, common_notes, views
from outguard.ruleset.ir import Ruleset

MAX_PORTS = 40  # ports per toPorts entry (the CRD's maxItems)
DENY_ANNOTATION = "outguard.io/deny-rules"


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


def _fqdns(view: RuleView, ledger: Ledger, opts: K8sOptions) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{"matchName": n} for n in view.names]
    for wild in view.wildcards:
        if opts.multi_level_wildcards:
            out.append({"matchPattern": "*" + wild})  # **.example.test: any depth (Cilium 1.19+)
        else:
            out.append({"matchPattern": wild})
            ledger.approx(view.key, f"{wild} matches one label only in Cilium"
                          f" {opts.cilium_version[0]}.{opts.cilium_version[1]} (a.{wild[2:]},"
                          f" not a.b.{wild[2:]}): deeper names are blocked; Cilium 1.19+ takes"
                          f" **.{wild[2:]}")
    return out


def _dns_rule(opts: K8sOptions) -> dict[str, Any]:
    assert opts.dns is not None
    return {"toEndpoints": [opts.dns.cilium_selector()], "toPorts": [{
        "ports": [{"port": "53", "protocol": "ANY"}],
        "rules": {"dns": [{"matchPattern": "*"}]}}]}


def cilium_policy(ruleset: Ruleset, ledger: Ledger, opts: K8sOptions, *,
                  clusterwide: bool = False) -> dict[str, Any]:
    kind = "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy"
    egress: list[dict[str, Any]] = []
    keys: list[str] = []
    deny: list[dict[str, Any]] = []
    deny_keys: list[str] = []
    if opts.dns is not None and ruleset.mode != "audit":
        egress.append(_dns_rule(opts))
        keys.append(DNS_KEY)
        ledger.approx(DNS_KEY, opts.dns_note() + "; its L7 dns rule lets Cilium's DNS proxy see"
                               " the lookups, which toFQDNs needs")
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
            deny_keys.extend([view.key] * len(rules))
            continue
        if view.fqdns:
            rules.append({"toFQDNs": _fqdns(view, ledger, opts)} | l4)
            if opts.dns is None:
                ledger.approx(view.key, "toFQDNs needs Cilium's DNS proxy to see the lookups:"
                                        " with -o dns=none another policy must allow DNS with an"
                                        " L7 dns rule")
            if ruleset.dns is None:
                ledger.approx(view.key, "toFQDNs follows DNS answers at run time; outguard"
                                        " without dns: allows only the addresses the names had"
                                        " when the policy was applied, and no wildcard")
        egress.extend(rules)
        keys.extend([view.key] * len(rules))
    if ruleset.mode == "audit":
        egress.append({"toEntities": ["all"]})
        keys.append("default")
    selector: dict[str, Any] = {}
    if clusterwide:
        skip = opts.dns.namespace if opts.dns is not None else "kube-system"
        selector = {"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace",
                                          "operator": "NotIn", "values": [skip]}]}
        ledger.warn(f"selects every pod of the cluster outside namespace {skip}")
    # explicit, so that a policy of deny rules only still denies by default (Cilium >= 1.15),
    # and ingress is left to whatever else selects the pods
    spec: dict[str, Any] = {"endpointSelector": selector,
                            "enableDefaultDeny": {"egress": True, "ingress": False}}
    if egress:
        spec["egress"] = egress
    if deny:
        spec["egressDeny"] = deny
    meta = opts.metadata(keys, namespaced=not clusterwide)
    meta["annotations"][DENY_ANNOTATION] = json.dumps(deny_keys)  # next to ANNOTATION's egress keys
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}
