"""The AdminNetworkPolicy half of the `k8s` target (policy.networking.k8s.io/v1alpha1, the
Kubernetes SIG Network API that cluster admins use above namespaces' NetworkPolicies).

Place in the data flow: `Ruleset` → `view.views` → one or more AdminNetworkPolicy dicts.

An ANP's egress rules are checked in order and the first that matches decides (Allow, Deny,
Pass), which is outguard's order when the rules are written deny rules first, then allow
rules, then a last `Deny` to `0.0.0.0/0` and `::/0` (networks cover cluster-internal traffic
too): the default. An ANP Allow is final (NetworkPolicies of the namespaces are not asked),
and so is its Deny. The subject is every namespace but the cluster DNS's (kube-system by
default), and the first rule allows DNS to the cluster DNS pods (`k8s_options`).

Limits of the API (v0.1.7 CRD): at most 100 rules per policy, 100 peers per rule, 25 networks
per peer, 25 domain names per peer, 100 ports per rule. A longer policy continues in a second
ANP at the next priority (ANPs of lower priority numbers are checked first). Host names of
allow rules become `domainNames` peers (an experimental field: an implementation without it
treats the rule as matching nothing, which fails closed): `*.example.test` there matches one
or more labels, as outguard's wildcards do; deny rules cannot use them and keep the addresses
resolved at export time. ANP ports are TCP, UDP or SCTP: an ICMP-only allow rule is dropped, an
ICMP-only deny rule applies to every protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outguard.export.k8s_options import DNS_KEY, K8sOptions
from outguard.export.view import Ledger, RuleView, chunks, common_notes, views
from outguard.ruleset.ir import Ruleset

API = "policy.networking.k8s.io/v1alpha1"
MAX_RULES, MAX_PEERS, MAX_NETWORKS, MAX_DOMAINS, MAX_PORTS = 100, 100, 25, 25, 100
EVERYWHERE = ["0.0.0.0/0", "::/0"]


def _ports(view: RuleView) -> list[dict[str, Any]] | None:
    """None: every protocol and port."""
    if view.proto in ("icmp",) or (view.proto == "any" and not view.ports):
        return None
    protos = ["TCP", "UDP"] if view.proto == "any" else [view.proto.upper()]
    ranges = view.ports or ((1, 65535),)
    out: list[dict[str, Any]] = []
    for proto in protos:
        for lo, hi in ranges:
            out.append({"portNumber": {"protocol": proto, "port": lo}} if lo == hi else
                       {"portRange": {"protocol": proto, "start": lo, "end": hi}})
    return out


def _peers(networks: Sequence[str], domains: Sequence[str]) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = [{"networks": list(c)} for c in chunks(networks, MAX_NETWORKS)]
    peers += [{"domainNames": list(c)} for c in chunks(domains, MAX_DOMAINS)]
    return peers


def _rules_of(view: RuleView, ledger: Ledger) -> list[dict[str, Any]]:
    action = "Deny" if view.deny else "Allow"
    ports = _ports(view)
    if view.proto == "icmp":
        if not view.deny:
            ledger.drop(view.key, "AdminNetworkPolicy cannot select ICMP (ports are TCP, UDP or"
                                  " SCTP)")
            return []
        ledger.approx(view.key, "applies to every protocol: AdminNetworkPolicy cannot select"
                                " ICMP")
    networks = EVERYWHERE if view.any_destination else list(view.v4 + view.v6)
    domains: list[str] = []
    if view.fqdns and view.deny:
        ledger.approx(view.key, "AdminNetworkPolicy domainNames are for Allow rules only: "
                      + ("names keep their export-time addresses" if view.names else "")
                      + ("; " if view.names and view.wildcards else "")
                      + ("wildcards left out" if view.wildcards else ""))
    elif view.fqdns:
        domains = [n.lower().rstrip(".") for n in view.names + view.wildcards]
        domains = [d for d in dict.fromkeys(domains) if "." in d.removeprefix("*.")]
        ledger.approx(view.key, "host names as domainNames (experimental in the v1alpha1 API: an"
                                " implementation without it matches nothing for them)")
    if not networks and not domains:
        ledger.drop(view.key, "no address or name to match")
        return []
    peers = _peers(networks, domains)
    port_parts: list[list[dict[str, Any]] | None] = (
        [None] if ports is None else [list(c) for c in chunks(ports, MAX_PORTS)])
    out = []
    for part in chunks(peers, MAX_PEERS):
        for ports_part in port_parts:
            rule: dict[str, Any] = {"name": view.key[:100], "action": action, "to": list(part)}
            if ports_part is not None:
                rule["ports"] = ports_part
            out.append(rule)
    return out


def admin_network_policies(ruleset: Ruleset, ledger: Ledger,
                           opts: K8sOptions) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    if opts.dns is not None and ruleset.mode != "audit":
        rules.append({"name": DNS_KEY, "action": "Allow", "to": [{"pods": {
            "namespaceSelector": opts.dns.namespace_selector(),
            "podSelector": opts.dns.pod_selector()}}],
            "ports": [{"portNumber": {"protocol": p, "port": 53}} for p in ("UDP", "TCP")]})
        ledger.approx(DNS_KEY, opts.dns_note() + "; it comes first, before the deny rules")
    for view in views(ruleset):
        if common_notes(view, ledger, "AdminNetworkPolicy", mode=ruleset.mode):
            rules.extend(_rules_of(view, ledger))
    if ruleset.mode != "audit":
        rules.append({"name": "default", "action": "Deny", "to": [{"networks": EVERYWHERE}]})
    skip = opts.dns.namespace if opts.dns is not None else "kube-system"
    subject = {"namespaces": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [skip]}]}}
    ledger.warn(f"applies to every namespace but {skip}; its Allow and Deny are final (the"
                " namespaces' NetworkPolicies are not asked)")
    parts = [list(c) for c in chunks(rules, MAX_RULES)] or [[]]
    if len(parts) > 1:
        ledger.warn(f"{len(rules)} rules: {len(parts)} AdminNetworkPolicies of at most"
                    f" {MAX_RULES} rules, priorities {opts.priority}-{opts.priority + len(parts) - 1}")
    docs = []
    for i, part in enumerate(parts):
        name = opts.name if i == 0 else f"{opts.name}-{i}"
        meta = opts.metadata([r["name"] for r in part], namespaced=False, name=name)
        docs.append({"apiVersion": API, "kind": "AdminNetworkPolicy", "metadata": meta,
                     "spec": {"priority": min(999, opts.priority + i), "subject": subject,
                              "egress": part}})
    return docs
