"""The `aws` target: golden files, the security-group / network-ACL / Network Firewall split,
and the quota warnings."""

from __future__ import annotations

import json

import pytest

from outguard.export.aws import NACL_ALLOW_V4, SG_RULES_PER_FAMILY, export_aws
from tests.export.cloud_inputs import check_export, policy_names, ruleset, ruleset_of


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("aws", policy, export_aws(ruleset(policy)))


def test_denies_go_to_the_network_acl_before_its_allow_all() -> None:
    export = export_aws(ruleset("cloud-mixed"))
    entries = json.loads(export.files["aws-network-acl-egress.json"])["Entries"]
    denies = [e for e in entries if e["RuleAction"] == "deny"]
    assert {e.get("CidrBlock") or e.get("Ipv6CidrBlock") for e in denies} >= {
        "198.51.100.0/24", "2001:db8:bad::/48", "0.0.0.0/0", "::/0"}
    assert max(e["RuleNumber"] for e in denies) < NACL_ALLOW_V4
    smtp = [e for e in denies if e.get("PortRange", {}).get("From") == 25]
    assert {e["Protocol"] for e in smtp} == {"6"}
    perms = json.loads(export.files["aws-security-group-egress.json"])["IpPermissions"]
    assert all("198.51.100" not in json.dumps(p) for p in perms)  # no deny in the group
    levels = {f.rule: f.level for f in export.fidelity}
    assert levels["deny:attacker-net"] == "approximated"
    assert levels["allow:backup-as-nobody"] == "dropped"
    assert levels["allow:web"] == "exact"
    assert levels["default"] == "approximated"  # reject


def test_fqdns_go_to_network_firewall_domain_lists() -> None:
    export = export_aws(ruleset("cloud-fqdn"))
    groups = json.loads(export.files["aws-network-firewall-rule-groups.json"])["RuleGroups"]
    lists = {g["RuleGroup"]["RulesSource"]["RulesSourceList"]["GeneratedRulesType"]:
             g["RuleGroup"]["RulesSource"]["RulesSourceList"]["Targets"] for g in groups}
    assert lists == {"DENYLIST": ["evil.example.test", ".bad.example.test"],
                     "ALLOWLIST": ["mirror.example.test", ".cdn.example.test", "api.example.test"]}
    assert any("Network Firewall" in w for w in export.warnings)


def test_security_group_quota_is_warned() -> None:
    addresses = ", ".join(f"203.0.113.{i}" for i in range(1, SG_RULES_PER_FAMILY + 2))
    export = export_aws(ruleset_of(f"""\
version: 1
allow:
  - name: many
    to: [{addresses}]
    ports: [443]
    proto: tcp
"""))
    assert any(f"{SG_RULES_PER_FAMILY + 1} IPv4 egress rules exceed" in w for w in export.warnings)


def test_audit_mode_keeps_egress_open() -> None:
    export = export_aws(ruleset("cloud-audit"))
    perms = json.loads(export.files["aws-security-group-egress.json"])["IpPermissions"]
    assert {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0",
                                              "Description": "outguard audit mode: allow all"}],
            "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "outguard audit mode: allow all"}]
            } in perms
    assert json.loads(export.files["aws-network-acl-egress.json"])["Entries"] == []
