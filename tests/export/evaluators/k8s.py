"""Evaluators of the `k8s` export: NetworkPolicy, Cilium (namespaced and clusterwide) and
AdminNetworkPolicy semantics, modelled for one pod that the policy selects.

The probing pod lives in a workload namespace; `probes.KUBE_DNS` is the address of the cluster
DNS pod (namespace kube-system, label k8s-app=kube-dns); every other address is outside the
cluster. No other policy selects the pod.

NetworkPolicy (kubernetes.io, "Network Policies"): a pod selected for Egress may send what the
union of the egress entries allows; an entry matches when one of its `to` peers matches (none:
every destination) and one of its `ports` matches (none: every port and protocol; `protocol`
defaults to TCP; no `port`: every port of the protocol; `endPort`: a range). An `ipBlock`
matches its CIDR minus `except`, and (implementation-defined for pod IPs) never the DNS pod; a
`namespaceSelector` + `podSelector` peer matches the DNS pod when it selects kube-system and
k8s-app=kube-dns. Everything else is dropped. ICMP only passes entries without `ports`.

Cilium (docs.cilium.io, "Layer 3 / Layer 4 policy", "DNS-based", "Deny policies"): with
`enableDefaultDeny.egress`, traffic is dropped unless an `egress` rule allows it; any matching
`egressDeny` rule drops first. A rule matches when its L3 part (toCIDRSet minus except;
toEntities all/world (world: not the DNS pod); toEndpoints selecting the DNS pod; toFQDNs when
the pod resolved a name the selector takes; none: every destination) and its L4 part (toPorts:
protocol ANY/TCP/UDP, port "0" every port, endPort; icmps: echo request types 8 / 128) both
match. toFQDNs `matchName` is the name (case-insensitive); `matchPattern`: `*` matches any
characters of one label; `*` alone every name; `**.` at the start (Cilium >= 1.19) one or more
labels; before 1.19 `**` is `*`.

AdminNetworkPolicy (network-policy-api v0.1.7): policies by priority (lower first), rules in
order, the first matching rule decides (Allow: accept, Deny: drop); none: NetworkPolicy and the
default (here: allowed). A peer matches by `networks` (CIDRs, cluster addresses included),
`domainNames` (the resolved name; `*.x` one or more labels) or `pods` (the DNS pod).

Rule keys come from the annotations `outguard.io/rules` / `outguard.io/deny-rules` (one per
egress / egressDeny entry) and ANP rule names.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

import yaml

from outguard.export.fidelity import Export
from tests.export.evaluators import Evaluate, Outcome, Probe
from tests.export.probes import KUBE_DNS

DNS_NS, DNS_LABEL = "kube-system", ("k8s-app", "kube-dns")


def _docs(export: Export, file: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(export.files[file]) if d]


def _in(addr: str, cidr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    net = ipaddress.ip_network(cidr)
    return ip.version == net.version and ip in net


def _port_ok(p: Probe, protocol: str, lo: int | None, hi: int | None) -> bool:
    if p.proto == "icmp" or (protocol != "ANY" and protocol != p.proto.upper()):
        return False
    return lo is None or (p.port is not None and lo <= p.port <= (hi if hi is not None else lo))


# --- NetworkPolicy -------------------------------------------------------------------------

def _np_peer(peer: dict[str, Any], p: Probe) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return p.dst != KUBE_DNS and _in(p.dst, block["cidr"]) and not any(
            _in(p.dst, e) for e in block.get("except", []))
    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    return p.dst == KUBE_DNS and ns == {"kubernetes.io/metadata.name": DNS_NS} and \
        pods == dict([DNS_LABEL])


def _np_entry(entry: dict[str, Any], p: Probe) -> bool:
    to = entry.get("to") or []
    if to and not any(_np_peer(peer, p) for peer in to):
        return False
    ports = entry.get("ports") or []
    return not ports or any(_port_ok(p, q.get("protocol", "TCP"), q.get("port"), q.get("endPort"))
                            for q in ports)


def networkpolicy(export: Export, probes: Sequence[Probe]) -> list[Outcome]:
    [doc] = _docs(export, "k8s-networkpolicy.yaml")
    assert doc["spec"]["podSelector"] == {} and doc["spec"]["policyTypes"] == ["Egress"]
    egress = doc["spec"].get("egress") or []
    keys = json.loads(doc["metadata"]["annotations"]["outguard.io/rules"])
    assert len(keys) == len(egress), "one rule key per egress entry"
    out = []
    for p in probes:
        hit = next((k for e, k in zip(egress, keys, strict=True) if _np_entry(e, p)), None)
        out.append(Outcome("accept", hit) if hit else Outcome("drop", "default"))
    return out


# --- Cilium --------------------------------------------------------------------------------

def fqdn_pattern(pattern: str, version: tuple[int, int]) -> re.Pattern[str]:
    """Cilium's matchPattern as a regular expression (see the module doc)."""
    pattern = pattern.lower().rstrip(".")
    if pattern == "*":
        return re.compile(r".*")
    prefix = ""
    if pattern.startswith("**.") and version >= (1, 19):
        prefix, pattern = r"([-a-z0-9_]+\.)+", pattern[3:]
    body = re.escape(pattern).replace(r"\*", "[-a-z0-9_]*")
    return re.compile(prefix + body)


def _selects_dns(sel: dict[str, Any]) -> bool:
    labels = sel.get("matchLabels", {})
    return labels == {"k8s:io.kubernetes.pod.namespace": DNS_NS, f"k8s:{DNS_LABEL[0]}": DNS_LABEL[1]}


def _cilium_l3(rule: dict[str, Any], p: Probe, version: tuple[int, int]) -> bool:
    if "toCIDRSet" in rule:
        return p.dst != KUBE_DNS and any(
            _in(p.dst, c["cidr"]) and not any(_in(p.dst, e) for e in c.get("except", []))
            for c in rule["toCIDRSet"])
    if "toEntities" in rule:
        ents = set(rule["toEntities"])
        return "all" in ents or ("world" in ents and p.dst != KUBE_DNS)
    if "toEndpoints" in rule:
        return p.dst == KUBE_DNS and any(_selects_dns(s) for s in rule["toEndpoints"])
    if "toFQDNs" in rule:
        if p.name is None:
            return False
        name = p.name.lower().rstrip(".")
        return any(s.get("matchName", "").lower().rstrip(".") == name
                   or ("matchPattern" in s and fqdn_pattern(s["matchPattern"], version).fullmatch(name))
                   for s in rule["toFQDNs"])
    return True


def _cilium_l4(rule: dict[str, Any], p: Probe) -> bool:
    if "icmps" in rule:
        family = "IPv6" if ":" in p.dst else "IPv4"
        echo = 128 if family == "IPv6" else 8
        return p.proto == "icmp" and any(f.get("family", "IPv4") == family and int(f["type"]) == echo
                                         for r in rule["icmps"] for f in r["fields"])
    to_ports = rule.get("toPorts")
    if not to_ports:
        return True
    for part in to_ports:
        for q in part.get("ports", []):
            port = int(q["port"])
            lo, hi = (None, None) if port == 0 else (port, q.get("endPort", port))
            if _port_ok(p, q.get("protocol", "ANY"), lo, hi):
                return True
    return False


def cilium_machine(file: str, version: tuple[int, int]) -> Evaluate:
    def evaluate(export: Export, probes: Sequence[Probe]) -> list[Outcome]:
        [doc] = _docs(export, file)
        spec, notes = doc["spec"], doc["metadata"]["annotations"]
        assert spec["enableDefaultDeny"]["egress"] is True
        allow, deny = spec.get("egress") or [], spec.get("egressDeny") or []
        keys = json.loads(notes["outguard.io/rules"])
        deny_keys = json.loads(notes["outguard.io/deny-rules"])
        assert len(keys) == len(allow) and len(deny_keys) == len(deny)
        out = []
        for p in probes:
            def hit(rules: list[dict[str, Any]], names: list[str], probe: Probe = p) -> str | None:
                return next((k for r, k in zip(rules, names, strict=True)
                             if _cilium_l3(r, probe, version) and _cilium_l4(r, probe)), None)
            if (key := hit(deny, deny_keys)) is not None:
                out.append(Outcome("drop", key))
            elif (key := hit(allow, keys)) is not None:
                out.append(Outcome("accept", key))
            else:
                out.append(Outcome("drop", "default"))
        return out
    return evaluate


# --- AdminNetworkPolicy --------------------------------------------------------------------

def _anp_peer(peer: dict[str, Any], p: Probe) -> bool:
    if "networks" in peer:
        return any(_in(p.dst, n) for n in peer["networks"])
    if "domainNames" in peer:
        if p.name is None:
            return False
        name = p.name.lower().rstrip(".")
        for domain in peer["domainNames"]:
            d = domain.lower().rstrip(".")
            if name == d or (d.startswith("*.") and name.endswith(d[1:]) and len(name) > len(d) - 1):
                return True
        return False
    pods = peer["pods"]
    return p.dst == KUBE_DNS and \
        pods["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": DNS_NS}} and \
        pods["podSelector"] == {"matchLabels": dict([DNS_LABEL])}


def _anp_ports(rule: dict[str, Any], p: Probe) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for q in ports:
        if "portNumber" in q:
            n = q["portNumber"]
            if _port_ok(p, n["protocol"], n["port"], n["port"]):
                return True
        elif "portRange" in q:
            r = q["portRange"]
            if _port_ok(p, r["protocol"], r["start"], r["end"]):
                return True
    return False


def adminnetworkpolicy(export: Export, probes: Sequence[Probe]) -> list[Outcome]:
    docs = sorted(_docs(export, "k8s-adminnetworkpolicy.yaml"), key=lambda d: d["spec"]["priority"])
    rules = [r for d in docs for r in d["spec"].get("egress") or []]
    out = []
    for p in probes:
        for r in rules:
            if any(_anp_peer(peer, p) for peer in r["to"]) and _anp_ports(r, p):
                out.append(Outcome("accept" if r["action"] == "Allow" else "drop", r["name"]))
                break
        else:
            out.append(Outcome("accept", None, "no ANP rule: NetworkPolicy and the default"))
    return out


Form = tuple[dict[str, str], Evaluate]
FORMS: dict[str, Form] = {
    "networkpolicy": ({"kind": "networkpolicy"}, networkpolicy),
    "cilium": ({"kind": "cilium"}, cilium_machine("k8s-ciliumnetworkpolicy.yaml", (1, 19))),
    "cilium-1.18": ({"kind": "cilium", "cilium-version": "1.18"},
                    cilium_machine("k8s-ciliumnetworkpolicy.yaml", (1, 18))),
    "cilium-clusterwide": ({"kind": "cilium-clusterwide"},
                           cilium_machine("k8s-ciliumclusterwidenetworkpolicy.yaml", (1, 19))),
    "adminnetworkpolicy": ({"kind": "adminnetworkpolicy"}, adminnetworkpolicy),
    # every kind in one export: each file against the one merged report
    "all-networkpolicy": ({}, networkpolicy),
    "all-cilium": ({}, cilium_machine("k8s-ciliumnetworkpolicy.yaml", (1, 19))),
    "all-adminnetworkpolicy": ({}, adminnetworkpolicy),
}
