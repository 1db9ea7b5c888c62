"""The `k8s` target: golden files; the NetworkPolicy loads through the official `kubernetes`
client's models (and round-trips, so no field is unknown to them); the CiliumNetworkPolicy
validates against `k8s_cilium_schema`; and on the decision table the NetworkPolicy never allows
what `decide` denies (deny rules subtracted, fail-closed where it cannot be exact)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, V1NetworkPolicy

from outguard.export.k8s import export_k8s, subtract
from outguard.ruleset.decide import Flow, decide
from tests.cases import CASE_NOW, CASES
from tests.export.cloud_inputs import check_export, policy_names, ruleset
from tests.export.k8s_cilium_schema import CiliumNetworkPolicy


def _load_np(doc: dict[str, Any]) -> V1NetworkPolicy:
    api = ApiClient()
    obj = api.deserialize(json.dumps(doc), "V1NetworkPolicy", "application/json")
    assert isinstance(obj, V1NetworkPolicy)
    assert api.sanitize_for_serialization(obj) == doc  # every field known to the model
    return obj


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("k8s", policy, export_k8s(ruleset(policy)))


@pytest.mark.parametrize("policy", policy_names())
def test_networkpolicy_loads_through_kubernetes_models(policy: str) -> None:
    doc = yaml.safe_load(export_k8s(ruleset(policy)).files["k8s-networkpolicy.yaml"])
    obj = _load_np(doc)
    assert obj.spec.policy_types == ["Egress"]


def test_kubernetes_model_check_can_fail() -> None:
    doc = yaml.safe_load(export_k8s(ruleset("cases")).files["k8s-networkpolicy.yaml"])
    doc["spec"]["egress"][0]["to"][0]["ipBlok"] = doc["spec"]["egress"][0]["to"][0].pop("ipBlock")
    with pytest.raises(AssertionError):
        _load_np(doc)


@pytest.mark.parametrize("policy", policy_names())
def test_cilium_policy_validates(policy: str) -> None:
    doc = yaml.safe_load(export_k8s(ruleset(policy)).files["k8s-ciliumnetworkpolicy.yaml"])
    CiliumNetworkPolicy.model_validate(doc)


def test_cilium_schema_can_fail() -> None:
    doc = yaml.safe_load(export_k8s(ruleset("cloud-fqdn")).files["k8s-ciliumnetworkpolicy.yaml"])
    doc["spec"]["egressDeny"].append({"toFQDNs": [{"matchName": "x.example.test"}]})
    with pytest.raises(ValueError, match="toFQDNs"):
        CiliumNetworkPolicy.model_validate(doc)


def test_cilium_has_deny_and_fqdns() -> None:
    doc = yaml.safe_load(export_k8s(ruleset("cloud-fqdn")).files["k8s-ciliumnetworkpolicy.yaml"])
    spec = doc["spec"]
    assert {"cidr": "198.51.100.66/32"} in spec["egressDeny"][0]["toCIDRSet"]
    fqdns = [s for r in spec["egress"] for s in r.get("toFQDNs", [])]
    assert {"matchPattern": "*.cdn.example.test"} in fqdns
    assert spec["egress"][0]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}


def _np_allows(doc: dict[str, Any], dst: str, port: int, proto: str) -> bool:
    """What a NetworkPolicy egress section allows (the Kubernetes semantics, for ipBlocks)."""
    addr = ipaddress.ip_address(dst)
    for entry in doc["spec"]["egress"]:
        to_ok = any(addr in ipaddress.ip_network(b["ipBlock"]["cidr"])
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
