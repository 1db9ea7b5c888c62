"""The `azure` target: golden files and the NSG's order (deny, allow, deny-all at 4096)."""

from __future__ import annotations

import json

import pytest

from outguard.export.azure import LAST_PRIORITY, arm_text, export_azure, nsg_name
from tests.export.cloud_inputs import check_export, policy_names, ruleset


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("azure", policy, export_azure(ruleset(policy)))


@pytest.mark.parametrize("policy", ["cases", "cloud-mixed", "lab-policy"])
def test_priorities_deny_then_allow_then_deny_all(policy: str) -> None:
    doc = json.loads(export_azure(ruleset(policy)).files["azure-nsg.json"])
    rules = doc["resources"][0]["properties"]["securityRules"]
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


def test_fqdns_become_application_rules() -> None:
    export = export_azure(ruleset("cloud-fqdn"))
    doc = json.loads(export.files["azure-firewall-policy.json"])
    groups = doc["resources"][0]["properties"]["ruleCollections"]
    assert [(g["action"]["type"], g["priority"]) for g in groups] == [("Deny", 100), ("Allow", 200)]
    allow = {r["name"]: r for r in groups[1]["rules"]}
    assert allow["og-mirror"]["targetFqdns"] == ["mirror.example.test"]
    assert {(p["protocolType"], p["port"]) for p in allow["og-mirror"]["protocols"]} == {
        ("Http", 80), ("Https", 443)}
    assert allow["og-cdn"]["targetFqdns"] == ["*.cdn.example.test"]
    levels = {f.rule: f.level for f in export.fidelity}
    assert levels["allow:cdn"] == "dropped"  # the NSG's deny-all blocks it first


def test_arm_and_name_escaping() -> None:
    assert arm_text("[concat('a')]") == "[[concat('a')]"
    assert arm_text("plain") == "plain"
    assert nsg_name("og-a b'c-") == "og-a_b_c-_"
