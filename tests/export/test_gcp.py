"""The `gcp` target: golden files, one network firewall policy in outguard's order that runs
before classic VPC rules, targets only the protected VMs, unique rule names, and an evaluation
of the export against `decide` (tests/export/evaluators/gcp.py)."""

from __future__ import annotations

import json
import re

import pytest

from outguard.export.gcp import DEFAULT_PRIORITY, MAX_RANGES, export_gcp
from outguard.export.gcp_plan import GcpOptions
from tests.export.cloud_inputs import check_export, cloud_policy_names, now_of, ruleset, ruleset_of
from tests.export.cloud_probes import differences
from tests.export.evaluators import gcp
from tests.export.evaluators.cloud import Probe

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _rules(export_files: dict[str, str]) -> list[dict]:
    return json.loads(export_files["gcp-firewall-policy-rules.json"])


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_golden(policy: str) -> None:
    check_export("gcp", policy, export_gcp(ruleset(policy)))


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_evaluated_export_agrees_with_decide_or_says_why(policy: str) -> None:
    rs = ruleset(policy)
    count, silent = differences(rs, export_gcp(rs), gcp.evaluate, now_of(policy))
    assert count > 20
    assert silent == []


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_policy_shape(policy: str) -> None:
    export = export_gcp(ruleset(policy))
    rules = _rules(export.files)
    prios = [r["priority"] for r in rules]
    assert prios == sorted(prios) and len(set(prios)) == len(prios)
    names = [r["ruleName"] for r in rules]
    assert len(set(names)) == len(names) and all(NAME.match(n) for n in names)
    for rule in rules:
        assert rule["direction"] == "EGRESS"
        assert rule["targetServiceAccounts"] == ["outguard-egress@PROJECT_ID.iam.gserviceaccount.com"]
        assert len(rule["match"].get("destIpRanges", [])) <= MAX_RANGES
        assert len({":" in c for c in rule["match"].get("destIpRanges", [])}) <= 1
    denies = [r["priority"] for r in rules if r["action"] == "deny" and r["priority"] < DEFAULT_PRIORITY]
    allows = [r["priority"] for r in rules if r["action"] == "allow"]
    if denies and allows:
        assert max(denies) < min(allows)
    assert json.loads(export.files["gcp-network-patch.json"]) == {
        "networkFirewallPolicyEnforcementOrder": "BEFORE_CLASSIC_FIREWALL"}
    assert "gcp-firewall-rules.json" not in export.files  # no classic VPC rule


def test_a_name_allow_is_not_shadowed_by_a_deny_all() -> None:
    """Issue 17: the VPC deny-all ran before the policy (AFTER_CLASSIC_FIREWALL by default), so
    a name's allow never matched. A new address of the name must be allowed by its FQDN rule."""
    export = export_gcp(ruleset("cloud-fqdn"))
    moved = Probe("203.0.113.77", 443, "tcp", name="api.example.test")  # not an export-time address
    assert gcp.evaluate(export.files, moved) == "allow"
    assert gcp.evaluate(export.files, Probe("203.0.113.77", 443, "tcp")) == "deny"
    assert gcp.evaluate(export.files, Probe("198.51.100.66", 443, "tcp",
                                            name="evil.example.test")) == "deny"


def test_colliding_rule_names_stay_apart() -> None:
    rules = _rules(export_gcp(ruleset("cloud/collide")).files)
    names = [r["ruleName"] for r in rules]
    assert len(set(names)) == len(names)
    web = [r for r in rules if "web" in r["ruleName"]]
    assert len(web) == 3  # Web.API, web-api, web_api: three rules, three names
    assert {r["description"] for r in web} == {"allow:Web.API", "allow:web-api", "allow:web_api"}


def test_targets_only_the_given_identity() -> None:
    opts = GcpOptions(project="p1", network="n1", secure_tags=("tagValues/123",))
    export = export_gcp(ruleset("cloud-mixed"), opts)
    for rule in _rules(export.files):
        assert rule["targetSecureTags"] == [{"name": "tagValues/123"}]
        assert "targetServiceAccounts" not in rule
    assoc = json.loads(export.files["gcp-firewall-policy-association.json"])
    assert assoc["attachmentTarget"] == "projects/p1/global/networks/n1"
    assert any("tagValues/123" in w for w in export.warnings)


def test_lists_become_address_groups_and_big_ones_fit() -> None:
    addresses = "\n".join(f"  - '2001:db8:{i // 250:x}::{i % 250:x}'" for i in range(6000))
    export = export_gcp(ruleset_of(f"version: 1\nallow:\n  - {{name: big, to: ['@big'], ports: [443],"
                                   f" proto: tcp}}\nlists:\n  big:\n{addresses}\n"))
    groups = json.loads(export.files["gcp-address-groups.json"])
    assert [(g["name"], g["type"], len(g["items"])) for g in groups] == [("og-big-v6", "IPV6", 6000)]
    (rule,) = [r for r in _rules(export.files) if r["action"] == "allow"]
    assert rule["match"]["destAddressGroups"] == [
        "projects/PROJECT_ID/locations/global/addressGroups/og-big-v6"]
    assert gcp.evaluate(export.files, Probe("2001:db8:17::f9", 443)) == "allow"
    assert gcp.evaluate(export.files, Probe("2001:db8:18::fa", 443)) == "deny"
