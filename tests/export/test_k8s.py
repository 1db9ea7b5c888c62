"""The `k8s` target: golden files, the validation tier, and the defects of issue 17 §7.

Validation (every policy of `tests/export/probes.py`: the golden ones, names and wildcards in
lists, `dns:`, audit, colliding names, a 6,000-entry list):
- NetworkPolicy: `kubernetes-validate` (the Kubernetes OpenAPI schema, strict: unknown fields
  are errors) and the official `kubernetes` client's models (round trip: no unknown field);
- CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy: Cilium's CRD schema (cilium 1.18.2,
  shipped in tests/export/schemas/, unknown fields are errors there);
- AdminNetworkPolicy: the network-policy-api v0.1.7 CRD schema (shipped there too; unknown
  fields made errors) plus its CEL rules, checked here by hand (jsonschema has no CEL).
What the policies *do* is checked by the evaluators (tests/export/test_evaluation.py).
"""

from __future__ import annotations

import ipaddress
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient, V1NetworkPolicy

from outguard.decide import Flow, decide
from outguard.export.common import ExportError
from outguard.export.k8s import export_k8s, subtract
from tests.cases import CASE_NOW, CASES
from tests.export import probes as tables
from tests.export.cloud_inputs import check_export, policy_names, ruleset, ruleset_of

SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = "1.33"  # a Kubernetes release whose schema kubernetes-validate ships
FILES = {"NetworkPolicy": "k8s-networkpolicy.yaml",
         "CiliumNetworkPolicy": "k8s-ciliumnetworkpolicy.yaml",
         "CiliumClusterwideNetworkPolicy": "k8s-ciliumclusterwidenetworkpolicy.yaml",
         "AdminNetworkPolicy": "k8s-adminnetworkpolicy.yaml"}
DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


@cache
def _validator(name: str) -> jsonschema.Draft7Validator:
    """The CRD's schema, with the formats the API server checks (`cidr`). Not checked as a
    JSON Schema: its patterns are Go RE2 (Cilium's `^\\PC*$` is no Python regex); each is
    compiled when a field it guards is there."""
    return jsonschema.Draft7Validator(json.loads((SCHEMAS / name).read_text()),
                                      format_checker=FORMATS)


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("cidr", raises=ValueError)
def _is_cidr(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.ip_network(value, strict=False))


def _docs(policy: str, kind: str, **opts: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(export_k8s(tables.exported(policy), **opts)
                                          .files[FILES[kind]]) if d]


def check_networkpolicy(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    api = ApiClient()
    obj = api.deserialize(json.dumps(doc), "V1NetworkPolicy", "application/json")
    assert isinstance(obj, V1NetworkPolicy)
    assert api.sanitize_for_serialization(obj) == doc  # every field known to the model


def _metadata(doc: dict[str, Any], namespaced: bool) -> None:
    meta = doc["metadata"]
    assert len(meta["name"]) <= 253 and jsonschema.Draft7Validator(
        {"pattern": DNS1123}).is_valid(meta["name"])
    assert ("namespace" in meta) <= namespaced
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}


def check_cilium(doc: dict[str, Any]) -> None:
    _validator("cilium-networkpolicy-v2.json").validate(doc)
    _metadata(doc, doc["kind"] == "CiliumNetworkPolicy")


def check_anp(doc: dict[str, Any]) -> None:
    _validator("policy.networking.k8s.io-adminnetworkpolicy-v1alpha1.json").validate(doc)
    _metadata(doc, False)
    assert doc["apiVersion"] == "policy.networking.k8s.io/v1alpha1"
    for rule in doc["spec"].get("egress", []):
        # the CRD's CEL rules (x-kubernetes-validations)
        for peer in rule["to"]:
            for net in peer.get("networks", []):
                ipaddress.ip_network(net)  # isCIDR(self)
        named = any("namedPort" in p for p in rule.get("ports", []))
        assert not (named and any({"networks", "nodes", "domainNames"} & set(peer)
                                  for peer in rule["to"]))
        assert not (rule["action"] != "Allow" and any("domainNames" in p for p in rule["to"]))


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


def test_validators_can_fail() -> None:
    np = _docs("cases", "NetworkPolicy")[0]
    np["spec"]["egress"][1]["to"][0]["ipBlok"] = np["spec"]["egress"][1]["to"][0].pop("ipBlock")
    with pytest.raises(kubernetes_validate.ValidationError):
        check_networkpolicy(np)
    cnp = _docs("cloud-fqdn", "CiliumNetworkPolicy")[0]
    cnp["spec"]["egressDeny"].append({"toFQDNs": [{"matchName": "x.example.test"}]})
    with pytest.raises(jsonschema.ValidationError, match="toFQDNs"):
        check_cilium(cnp)
    cnp = _docs("cloud-fqdn", "CiliumNetworkPolicy")[0]
    cnp["spec"]["egress"][1]["toCIDRSet"][0]["cidr"] = "203.0.113.300/32"
    with pytest.raises(jsonschema.ValidationError):
        check_cilium(cnp)
    anp = _docs("cases", "AdminNetworkPolicy")[0]
    anp["spec"]["egress"][1]["to"][0]["networks"].append("203.0.113.0/24x")
    with pytest.raises(ValueError, match="24x"):  # the CEL rule isCIDR(self)
        check_anp(anp)
    anp = _docs("cases", "AdminNetworkPolicy")[0]
    anp["spec"]["egress"] = anp["spec"]["egress"] * 10  # more than 100 rules
    with pytest.raises(jsonschema.ValidationError):
        check_anp(anp)


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
