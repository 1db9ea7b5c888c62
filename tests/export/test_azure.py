"""The `azure` target: golden files, the NSG's order (deny, allow, deny-all at 4096) in separate
rule resources, the Azure Firewall policy (network rules with FQDNs, IP groups, wildcards as
application rules), the NSG's prefix limit, names without case, and an evaluation of the
export against `decide` (tests/export/evaluators/azure.py)."""

from __future__ import annotations

import json

import pytest

from outguard.export.azure import LAST_PRIORITY, MAX_PREFIXES, arm_text, export_azure, nsg_name
from tests.export.cloud_inputs import check_export, cloud_policy_names, now_of, ruleset, ruleset_of
from tests.export.cloud_probes import differences
from tests.export.evaluators import azure
from tests.export.evaluators.cloud import Probe


def _rules(export_files: dict[str, str]) -> list[dict]:
    doc = json.loads(export_files["azure-nsg-rules.json"])
    return [{"name": r["name"].split("/")[-1][:-3], "properties": r["properties"]}
            for r in doc["resources"]]


def _firewall_rules(export_files: dict[str, str]) -> dict[str, dict]:
    doc = json.loads(export_files["azure-firewall-policy.json"])
    (group,) = [r for r in doc["resources"] if r["type"].endswith("ruleCollectionGroups")]
    return {f"{c['name']}/{r['name']}": r for c in group["properties"]["ruleCollections"]
            for r in c["rules"]}


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_golden(policy: str) -> None:
    check_export("azure", policy, export_azure(ruleset(policy)))


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_evaluated_export_agrees_with_decide_or_says_why(policy: str) -> None:
    rs = ruleset(policy)
    count, silent = differences(rs, export_azure(rs), azure.evaluate, now_of(policy))
    assert count > 20
    assert silent == []


@pytest.mark.parametrize("policy", ["cases", "cloud-mixed", "lab-policy"])
def test_priorities_deny_then_allow_then_deny_all(policy: str) -> None:
    rules = _rules(export_azure(ruleset(policy)).files)
    prios = [r["properties"]["priority"] for r in rules]
    assert prios == sorted(prios) and len(set(prios)) == len(prios)
    access = [r["properties"]["access"] for r in rules]
    assert access[-1] == "Deny" and prios[-1] == LAST_PRIORITY
    assert access[:-1] == sorted(access[:-1], key=lambda a: a != "Deny")
    for rule in rules:
        props = rule["properties"]
        assert props["direction"] == "Outbound"
        prefixes = props.get("destinationAddressPrefixes") or [props["destinationAddressPrefix"]]
        assert len({":" in p for p in prefixes}) == 1  # never IPv4 and IPv6 in one rule
        assert len(rule["name"]) <= 80


def test_rules_are_separate_resources_of_an_existing_nsg() -> None:
    """Issue 17: redeploying an NSG with inline securityRules replaced its inbound rules too."""
    doc = json.loads(export_azure(ruleset("cloud-mixed")).files["azure-nsg-rules.json"])
    assert {r["type"] for r in doc["resources"]} == {
        "Microsoft.Network/networkSecurityGroups/securityRules"}
    prune = export_azure(ruleset("cloud-mixed")).files["azure-nsg-prune.sh"]
    assert "og-allow-web-tcp-v4" in prune and "az network nsg rule delete" in prune


def test_udp_and_icmp_names_are_network_rules() -> None:
    """Issue 17: UDP and ICMP name rules became HTTP/HTTPS application rules (never matched)."""
    export = export_azure(ruleset("cloud/names-in-lists"))
    rules = _firewall_rules(export.files)
    ntp = rules["outguard-allow-network/og-allow-ntp-fqdn"]
    assert ntp["ipProtocols"] == ["UDP"] and ntp["destinationFqdns"] == ["mirror.example.test"]
    assert rules["outguard-allow-network/og-allow-ping-api-fqdn"]["ipProtocols"] == ["ICMP"]
    assert azure.evaluate(export.files, Probe("203.0.113.20", 123, "udp",
                                              name="mirror.example.test")) == "allow"
    assert azure.evaluate(export.files, Probe("203.0.113.30", None, "icmp",
                                              name="api.example.test")) == "allow"
    wild = rules["outguard-allow-application/og-allow-partners-wildcards"]
    assert wild["targetFqdns"] == ["*.cdn.example.test"]
    assert wild["protocols"] == [{"protocolType": "Https", "port": 443}]


def test_lists_become_ip_groups() -> None:
    export = export_azure(ruleset("cloud/names-in-lists"))
    doc = json.loads(export.files["azure-firewall-policy.json"])
    groups = {r["name"]: r["properties"]["ipAddresses"] for r in doc["resources"]
              if r["type"] == "Microsoft.Network/ipGroups"}
    assert groups["og-nets"] == ["203.0.113.128/25"]  # Azure Firewall filters IPv4 only
    nets = _firewall_rules(export.files)["outguard-allow-network/og-allow-nets-lists"]
    assert nets["destinationIpGroups"] == ["[resourceId('Microsoft.Network/ipGroups', 'og-nets')]"]


def test_a_big_list_keeps_the_nsg_closed_and_is_not_exact() -> None:
    """Issue 17: 6,213 prefixes exceed the 4,000 per NSG yet the report said exact (and a
    refused deny-all leaves AllowInternetOutBound in force)."""
    addresses = "\n".join(f"  - '2001:db8:{i // 250:x}::{i % 250:x}'" for i in range(6000))
    export = export_azure(ruleset_of(
        "version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443], proto: tcp}\n"
        f"  - {{name: big, to: ['@big'], ports: [443], proto: tcp}}\nlists:\n  big:\n{addresses}\n"))
    rules = _rules(export.files)
    assert sum(len(r["properties"].get("destinationAddressPrefixes", [1])) for r in rules) <= MAX_PREFIXES
    levels = {f.rule: f.level for f in export.fidelity}
    assert levels["allow:big"] == "dropped" and levels["allow:web"] == "exact"
    assert azure.nsg(export.files, Probe("192.0.2.99", 443)) == "deny"
    assert azure.nsg(export.files, Probe("203.0.113.10", 443)) == "allow"


def test_names_that_differ_in_case_stay_apart() -> None:
    export = export_azure(ruleset("cloud/collide"))
    names = [r["name"] for r in _rules(export.files)]
    assert len({n.lower() for n in names}) == len(names)
    assert azure.nsg(export.files, Probe("198.51.100.1", 443)) == "deny"
    assert azure.nsg(export.files, Probe("203.0.113.3", 8443)) == "allow"


def test_arm_and_name_escaping() -> None:
    assert arm_text("[concat('a')]") == "[[concat('a')]"
    assert arm_text("plain") == "plain"
    assert nsg_name("og-a b'c-") == "og-a_b_c-_"
