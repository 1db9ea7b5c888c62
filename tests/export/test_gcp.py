"""The `gcp` target: golden files, priorities (deny < allow < deny-all) and family split."""

from __future__ import annotations

import json
import re

import pytest

from outguard.export.gcp import DEFAULT_PRIORITY, export_gcp, gcp_name
from tests.export.cloud_inputs import check_export, policy_names, ruleset

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("gcp", policy, export_gcp(ruleset(policy)))


@pytest.mark.parametrize("policy", ["cases", "cloud-mixed", "lab-policy"])
def test_firewall_rules_shape(policy: str) -> None:
    rules = json.loads(export_gcp(ruleset(policy)).files["gcp-firewall-rules.json"])
    names = [r["name"] for r in rules]
    assert len(set(names)) == len(names) and all(NAME.match(n) for n in names)
    for rule in rules:
        assert rule["direction"] == "EGRESS"
        assert len({":" in c for c in rule["destinationRanges"]}) == 1
        assert ("denied" in rule) != ("allowed" in rule)
    denies = [r["priority"] for r in rules if "denied" in r and r["priority"] != DEFAULT_PRIORITY]
    allows = [r["priority"] for r in rules if "allowed" in r]
    assert max(denies) < min(allows) < max(allows) < DEFAULT_PRIORITY
    assert [r["destinationRanges"] for r in rules[-2:]] == [["0.0.0.0/0"], ["::/0"]]


def test_fqdns_become_policy_rules_without_wildcards() -> None:
    export = export_gcp(ruleset("cloud-fqdn"))
    rules = json.loads(export.files["gcp-network-firewall-policy-rules.json"])
    assert [(r["action"], r["match"]["destFqdns"]) for r in rules] == [
        ("deny", ["evil.example.test"]), ("allow", ["mirror.example.test"]),
        ("allow", ["api.example.test"])]
    levels = {f.rule: f.level for f in export.fidelity}
    assert levels["allow:cdn"] == "dropped" and levels["deny:bad-wildcard"] == "dropped"


def test_names_are_rfc1035() -> None:
    assert NAME.match(gcp_name("og-allow-Web_API.v2-v4"))
    assert gcp_name("og-" + "x" * 100).startswith("og-x") and len(gcp_name("og-" + "x" * 100)) == 63
