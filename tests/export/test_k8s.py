"""The `k8s` target: golden files, the validation tier, and the defects of issue 17 §7.

Validation (every policy of `tests/export/probes.py`: the golden ones, names and wildcards in
lists, `dns:`, audit, colliding names, a 6,000-entry list):
- NetworkPolicy: `kubernetes-validate` (the Kubernetes OpenAPI schema, strict: unknown fields
  are errors) and the official `kubernetes` client's models (round trip: no unknown field);
- CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy: `vendor_cilium`, a hand-written subset
  of Cilium's CRD schema and rule sanitation (Cilium 1.18; unknown fields are errors);
- AdminNetworkPolicy: `vendor_anp`, a hand-written subset of the network-policy-api v0.1.7 CRD
  schema with its CEL rules (unknown fields are errors).
What the policies *do* is checked by the evaluators (tests/export/test_evaluation.py).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient, V1NetworkPolicy
from pydantic import ValidationError

from outguard.export.common import ExportError
from outguard.export.k8s import export_k8s, subtract
from outguard.ruleset.decide import Flow, decide
from tests.cases import CASE_NOW, CASES
from tests.export import probes as tables
from tests.export import vendor_anp, vendor_cilium
from tests.export.cloud_inputs import check_export, policy_names, ruleset, ruleset_of

K8S_VERSION = "1.33"  # a Kubernetes release whose schema kubernetes-validate ships
FILES = {"NetworkPolicy": "k8s-networkpolicy.yaml",
         "CiliumNetworkPolicy": "k8s-ciliumnetworkpolicy.yaml",
         "CiliumClusterwideNetworkPolicy": "k8s-ciliumclusterwidenetworkpolicy.yaml",
         "AdminNetworkPolicy": "k8s-adminnetworkpolicy.yaml"}
CILIUM = {"CiliumNetworkPolicy": vendor_cilium.CiliumNetworkPolicy,
          "CiliumClusterwideNetworkPolicy": vendor_cilium.CiliumClusterwideNetworkPolicy}


def _docs(policy: str, kind: str, **opts: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(export_k8s(tables.exported(policy), **opts)
                                          .files[FILES[kind]]) if d]


def check_networkpolicy(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    api = ApiClient()
    obj = api.deserialize(json.dumps(doc), "V1NetworkPolicy", "application/json")
    assert isinstance(obj, V1NetworkPolicy)
    assert api.sanitize_for_serialization(obj) == doc  # every field known to the model


def check_cilium(doc: dict[str, Any]) -> None:
    CILIUM.get(doc.get("kind"), vendor_cilium.CiliumNetworkPolicy).model_validate(doc)


def check_anp(doc: dict[str, Any]) -> None:
    vendor_anp.AdminNetworkPolicy.model_validate(doc)


CHECKS = {"NetworkPolicy": check_networkpolicy, "CiliumNetworkPolicy": check_cilium,
          "CiliumClusterwideNetworkPolicy": check_cilium, "AdminNetworkPolicy": check_anp}
VALIDATION = [(p, k) for p in tables.eval_policy_names() for k in FILES]


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("k8s", policy, export_k8s(ruleset(policy)))


@pytest.mark.parametrize(("policy", "kind"), VALIDATION, ids=[f"{p}-{k}" for p, k in VALIDATION])
def test_every_kind_validates(policy: str, kind: str) -> None:
    docs = _docs(policy, kind)
    assert docs and all(d["kind"] == kind for d in docs)
    for doc in docs:
        CHECKS[kind](doc)


def test_the_networkpolicy_check_can_fail() -> None:
    np = _docs("cases", "NetworkPolicy")[0]
    np["spec"]["egress"][1]["to"][0]["ipBlok"] = np["spec"]["egress"][1]["to"][0].pop("ipBlock")
    with pytest.raises(kubernetes_validate.ValidationError):
        check_networkpolicy(np)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set the value at a dotted path (list indexes as numbers)."""
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


def _rename(path: str, new: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        node[new] = node.pop(last)
    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        del node[last]
    return mutate


NOT_A_NETWORK = "does not appear to be an IPv4 or IPv6 network"
CNP, CCNP, ANP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "AdminNetworkPolicy"
# name: (policy, kind, mutation, what the error says): each a mistake an exporter could make
BROKEN: dict[str, tuple[str, str, Callable[[dict[str, Any]], None], str]] = {
    "cilium-typo": ("cloud-fqdn", CNP, _rename("spec.egress.1.toCIDRSet", "toCIDRset"),
                    r"toCIDRset\n  Extra inputs are not permitted"),
    "cilium-fqdn-in-deny": ("cloud-fqdn", CNP, _set("spec.egressDeny.0.toFQDNs",
                                                    [{"matchName": "x.example.test"}]),
                            r"toFQDNs\n  Extra inputs are not permitted"),
    "cilium-bad-cidr": ("cloud-fqdn", CNP, _set("spec.egress.1.toCIDRSet.0.cidr",
                                                "203.0.113.300/32"), NOT_A_NETWORK),
    "cilium-host-bits": ("cloud-fqdn", CNP, _set("spec.egress.1.toCIDRSet.0.cidr",
                                                 "203.0.113.1/24"), "host bits"),
    "cilium-protocol": ("cases", CNP, _set("spec.egress.1.toPorts.0.ports.0.protocol", "TCPP"),
                        "'TCP', 'UDP', 'SCTP' or 'ANY'"),
    "cilium-entity": ("cases", CNP, _set("spec.egressDeny.0.toEntities", ["World"]),
                      "Input should be 'all', 'world'"),
    "cilium-no-selector": ("cases", CNP, _drop("spec.endpointSelector"),
                           r"endpointSelector\n  Field required"),
    "cilium-two-l3": ("cases", CNP, _set("spec.egress.1.toEntities", ["all"]),
                      "one L3 selector per rule"),
    "cilium-dns-port-range": ("cases", CNP, _set("spec.egress.0.toPorts.0.ports.0.endPort", 54),
                              "DNS rules need their ports"),
    "cilium-41-ports": ("cases", CNP, _set("spec.egress.1.toPorts.0.ports", [
        {"port": str(p), "protocol": "TCP"} for p in range(41)]), "at most 40 items"),
    "ccnp-namespace": ("cases", CCNP, _set("metadata.namespace", "web"),
                       "a clusterwide policy has no namespace"),
    "cilium-name": ("cases", CNP, _set("metadata.name", "Outguard_Egress"),
                    r"metadata\.name\n  String should match pattern"),
    "anp-bad-cidr": ("cases", ANP, _set("spec.egress.1.to.0.networks.0", "203.0.113.0/24x"),
                     NOT_A_NETWORK),
    "anp-action": ("cases", ANP, _set("spec.egress.1.action", "Reject"),
                   "'Allow', 'Deny' or 'Pass'"),
    "anp-no-to": ("cases", ANP, _drop("spec.egress.1.to"), r"egress\.1\.to\n  Field required"),
    "anp-typo": ("names-in-lists-dns", ANP, _rename("spec.egress.0.to.0.pods", "pod"),
                 r"pod\n  Extra inputs are not permitted"),
    "anp-domains-in-deny": ("names-in-lists-dns", ANP, _set(
        "spec.egress.1.to", [{"domainNames": ["x.example.test"]}]), "domainNames in a Deny"),
    "anp-two-peer-kinds": ("cases", ANP, _set("spec.egress.1.to.0.domainNames",
                                              ["x.example.test"]), "exactly one of pods"),
    "anp-protocol": ("cases", ANP, _set("spec.egress.0.ports.0.portNumber.protocol", "udp"),
                     "'TCP', 'UDP' or 'SCTP'"),
    "anp-priority": ("cases", ANP, _set("spec.priority", 1001), "less than or equal to 1000"),
    "anp-101-rules": ("cases", ANP, lambda d: d["spec"].update(egress=d["spec"]["egress"] * 10),
                      "at most 100 items"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_crd_checks_can_fail(case: str) -> None:
    """Each check refuses a wrong export: the exact one passes, the broken one names its fault."""
    policy, kind, mutate, word = BROKEN[case]
    doc = _docs(policy, kind)[0]
    CHECKS[kind](doc)
    mutate(doc)
    with pytest.raises(ValidationError, match=word):
        CHECKS[kind](doc)


def test_every_kind_allows_dns_to_the_cluster_dns() -> None:
    """Issue 17 §7: the NetworkPolicy allowed no DNS, so every lookup in the namespace broke."""
    [np] = _docs("cases", "NetworkPolicy")
    assert np["spec"]["egress"][0] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    [cnp] = _docs("cases", "CiliumNetworkPolicy")
    assert cnp["spec"]["egress"][0]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}
    [anp] = _docs("cases", "AdminNetworkPolicy")
    assert anp["spec"]["egress"][0]["name"] == "dns"
    report = {f.rule: f for f in export_k8s(tables.exported("cases")).fidelity}
    assert report["dns"].level == "approximated" and "kube-dns" in report["dns"].how
    [np] = _docs("cases", "NetworkPolicy", dns="coredns/app=coredns")
    assert np["spec"]["egress"][0]["to"][0]["podSelector"] == {"matchLabels": {"app": "coredns"}}
    none = export_k8s(tables.exported("cases"), dns="none", kind="networkpolicy")
    assert "dns" not in {f.rule for f in none.fidelity}
    assert "kube-dns" not in none.files["k8s-networkpolicy.yaml"]


def test_wildcards_match_any_depth_from_cilium_1_19_and_are_reported_before() -> None:
    """Issue 17 §7: Cilium's `*.x` matches one label, outguard's any depth, unreported."""
    [cnp] = _docs("wildcards-dns", "CiliumNetworkPolicy")
    patterns = [s["matchPattern"] for r in cnp["spec"]["egress"] for s in r.get("toFQDNs", [])
                if "matchPattern" in s]
    assert patterns == ["**.cdn.example.test"]
    old = export_k8s(tables.exported("wildcards-dns"), kind="cilium", cilium_version="1.18")
    assert "'*.cdn.example.test'" in old.files["k8s-ciliumnetworkpolicy.yaml"]
    how = {f.rule: f for f in old.fidelity}["allow:cdn"]
    assert how.level == "approximated" and "one label only" in how.how


def test_list_names_reach_every_name_form() -> None:
    """Issue 17 §2: names and wildcards inside @list entries were frozen or dropped."""
    [cnp] = _docs("names-in-lists-dns", "CiliumNetworkPolicy")
    fqdns = {v for r in cnp["spec"]["egress"] for s in r.get("toFQDNs", []) for v in s.values()}
    assert fqdns == {"partner.example.test", "gone.example.test", "**.cdn.example.test",
                     "mirror.example.test"}
    [anp] = _docs("names-in-lists-dns", "AdminNetworkPolicy")
    domains = {d for r in anp["spec"]["egress"] for p in r["to"] for d in p.get("domainNames", [])}
    assert domains == {"partner.example.test", "gone.example.test", "*.cdn.example.test",
                       "mirror.example.test"}


def test_a_long_admin_network_policy_continues_at_the_next_priority() -> None:
    rules = "\n".join(f"  - name: r{i}\n    to: [203.0.113.{i}]\n    ports: [443]\n    proto: tcp"
                      for i in range(1, 151))
    result = export_k8s(ruleset_of(f"version: 1\nallow:\n{rules}\n"), kind="adminnetworkpolicy")
    docs = list(yaml.safe_load_all(result.files["k8s-adminnetworkpolicy.yaml"]))
    assert [d["spec"]["priority"] for d in docs] == [50, 51]
    assert [d["metadata"]["name"] for d in docs] == ["outguard-egress", "outguard-egress-1"]
    assert sum(len(d["spec"]["egress"]) for d in docs) == 152  # dns, 150 rules, default
    assert docs[1]["spec"]["egress"][-1]["name"] == "default"
    for doc in docs:
        check_anp(doc)


def test_options_are_checked() -> None:
    rs = tables.exported("cases")
    for opts, word in (({"kind": "calico"}, "kind"), ({"dns": "kube-dns"}, "dns"),
                       ({"name": "Bad_Name"}, "name"), ({"cilium_version": "new"}, "cilium-version"),
                       ({"priority": "1000"}, "priority")):
        with pytest.raises(ExportError, match=word):
            export_k8s(rs, **opts)
    assert list(export_k8s(rs, kind="cilium").files) == ["k8s-ciliumnetworkpolicy.yaml"]
    meta = _docs("cases", "CiliumNetworkPolicy", namespace="web")[0]["metadata"]
    assert meta["namespace"] == "web"
    assert "namespace" not in _docs("cases", "AdminNetworkPolicy", namespace="web")[0]["metadata"]


def _np_allows(doc: dict[str, Any], dst: str, port: int, proto: str) -> bool:
    """What a NetworkPolicy egress section allows (the Kubernetes semantics, for ipBlocks)."""
    addr = ipaddress.ip_address(dst)
    for entry in doc["spec"]["egress"]:
        to_ok = any("ipBlock" in b and addr in ipaddress.ip_network(b["ipBlock"]["cidr"])
                    and not any(addr in ipaddress.ip_network(e)
                                for e in b["ipBlock"].get("except", []))
                    for b in entry.get("to", []))
        ports = entry.get("ports")
        port_ok = ports is None or any(
            p["protocol"] == proto.upper() and ("port" not in p or
                                                p["port"] <= port <= p.get("endPort", p["port"]))
            for p in ports)
        if to_ok and port_ok:
            return True
    return False


def test_networkpolicy_never_allows_what_decide_denies() -> None:
    rules = ruleset("cases")
    doc = yaml.safe_load(export_k8s(rules).files["k8s-networkpolicy.yaml"])
    allowed_exactly = 0
    for case in CASES:
        decision = decide(rules, Flow(case.dst, case.port, case.proto, uid=case.uid,
                                      gid=case.gid), CASE_NOW)
        np = _np_allows(doc, case.dst, case.port, case.proto)
        if np:
            assert decision.action == "allow", f"{case.id}: NetworkPolicy allows, {decision.rule}"
        elif decision.action == "allow":
            # only where the fidelity report says the rule is not exact
            level = {f.rule: f.level for f in export_k8s(rules).fidelity}[decision.rule]
            assert level != "exact", f"{case.id}: exact rule {decision.rule} lost"
        allowed_exactly += np
    assert allowed_exactly > 10  # the check compares something


def test_subtract_ports() -> None:
    assert subtract(((1, 65535),), ((25, 25), (465, 465))) == ((1, 24), (26, 464), (466, 65535))
    assert subtract(((80, 80),), ((1, 100),)) == ()
    assert subtract(((80, 90),), ((85, 200),)) == ((80, 84),)
