"""The `aws` target: golden files, the security-group / network-ACL / Network Firewall / DNS
Firewall split, quotas, audit mode, and an evaluation of the export against `decide`
(tests/export/evaluators/aws.py)."""

from __future__ import annotations

import json

import pytest

from outguard.export.aws import NACL_ALLOW_V4, SG_RULES_PER_FAMILY, export_aws
from tests.export.cloud_inputs import check_export, cloud_policy_names, now_of, ruleset, ruleset_of
from tests.export.cloud_probes import differences, probes
from tests.export.evaluators import aws
from tests.export.evaluators.cloud import Probe


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_golden(policy: str) -> None:
    check_export("aws", policy, export_aws(ruleset(policy)))


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_evaluated_export_agrees_with_decide_or_says_why(policy: str) -> None:
    rs = ruleset(policy)
    count, silent = differences(rs, export_aws(rs), aws.evaluate, now_of(policy))
    assert count > 20
    assert silent == []


def test_deny_entries_come_before_the_default_acls_allow_all() -> None:
    """Issue 17: deny entries started at 100, which the default network ACL holds (allow all):
    the entry was refused and the allow-all let the denied network out."""
    export = export_aws(ruleset("cloud-mixed"))
    entries = json.loads(export.files["aws-network-acl-egress.json"])["Entries"]
    assert max(e["RuleNumber"] for e in entries if e["RuleAction"] == "deny") < 100
    for dst in ("198.51.100.5", "2001:db8:bad::5"):
        assert aws.network_acl(export.files, Probe(dst, 443)) == "deny"
        assert aws.evaluate(export.files, Probe(dst, 443)) == "deny"
    report = {f.rule: f.how for f in export.fidelity}
    assert "stateless" in report["deny:attacker-net"]


def test_a_new_group_loses_its_allow_all() -> None:
    """Issue 17: the security-group JSON never revoked a new group's allow-all egress."""
    export = export_aws(ruleset("cloud-mixed"))
    assert aws.security_group(export.files, Probe("192.0.2.200", 443)) == "deny"
    assert aws.security_group(export.files, Probe("203.0.113.10", 443)) == "allow"
    assert any("aws-security-group-revoke-default.json" in w for w in export.warnings)


@pytest.mark.parametrize("policy", ["cloud-audit", "cloud/dns-audit"])
def test_audit_mode_blocks_nothing(policy: str) -> None:
    """Issue 17: audit mode emitted a blocking Network Firewall allowlist."""
    rs = ruleset(policy)
    export = export_aws(rs)
    groups = json.loads(export.files["aws-network-firewall-rule-groups.json"])["RuleGroups"]
    kinds = {g["RuleGroup"]["RulesSource"]["RulesSourceList"]["GeneratedRulesType"] for g in groups
             if "RulesSourceList" in g["RuleGroup"]["RulesSource"]}
    assert kinds <= {"ALERTLIST"}
    strings = [g["RuleGroup"]["RulesSource"]["RulesString"] for g in groups
               if "RulesString" in g["RuleGroup"]["RulesSource"]]
    assert all(line.startswith("alert ") for text in strings for line in text.splitlines())
    assert all(aws.evaluate(export.files, p) == "allow" for p in probes(rs))
    if rs.dns is not None:
        rules = json.loads(export.files["aws-dns-firewall.json"])["CreateFirewallRule"]
        assert {r["Action"] for r in rules} == {"ALERT", "ALLOW"}


def test_dns_policies_get_a_dns_firewall_in_outguards_order() -> None:
    export = export_aws(ruleset("cloud-dns"))
    doc = json.loads(export.files["aws-dns-firewall.json"])
    rules = [(r["Priority"], r["Action"], r["FirewallDomainListId"]) for r in doc["CreateFirewallRule"]]
    assert rules == [(100, "BLOCK", "outguard-deny"), (200, "ALLOW", "outguard-allow"),
                     (300, "BLOCK", "outguard-unlisted")]
    domains = {u["FirewallDomainListId"]: u["Domains"] for u in doc["UpdateFirewallDomains"]}
    assert domains["outguard-allow"] == ["api.example.test", "partner.example.test",
                                         "*.cdn.example.test", "gone.example.test"]
    assert domains["outguard-deny"] == ["c2.example.test", "evil.example.test"]
    assert aws.dns_firewall(export.files, Probe("203.0.113.5", 443, name="x.y.cdn.example.test")) == "allow"
    assert aws.dns_firewall(export.files, Probe("203.0.113.5", 443, name="elsewhere.test")) == "deny"
    assert {f.rule: f.level for f in export.fidelity}["dns"] == "approximated"
    assert "aws-dns-firewall.json" not in export_aws(ruleset("cloud-fqdn")).files


def test_network_acl_quota_makes_rules_inexact() -> None:
    nets = ", ".join(f"198.51.100.{i}" for i in range(1, 18))
    export = export_aws(ruleset_of(f"version: 1\ndeny:\n  - {{name: many, to: [{nets}]}}\n"))
    (many,) = [f for f in export.fidelity if f.rule == "deny:many"]
    assert "past the default quota of 20 entries" in many.how


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
             g["RuleGroup"]["RulesSource"]["RulesSourceList"]["Targets"] for g in groups
             if "RulesSourceList" in g["RuleGroup"]["RulesSource"]}
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
    (many,) = [f for f in export.fidelity if f.rule == "allow:many"]
    assert many.level == "approximated" and "past the default quota of 60 IPv4 rules" in many.how


def test_audit_mode_keeps_egress_open() -> None:
    export = export_aws(ruleset("cloud-audit"))
    perms = json.loads(export.files["aws-security-group-egress.json"])["IpPermissions"]
    assert {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0",
                                              "Description": "outguard audit mode: allow all"}],
            "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "outguard audit mode: allow all"}]
            } in perms
    assert json.loads(export.files["aws-network-acl-egress.json"])["Entries"] == []


def test_a_deny_list_too_big_for_a_network_acl_is_whole_in_a_network_firewall_ip_set() -> None:
    """Issue 17: a network ACL holds 20 entries; a 2,000-network deny list fits only in a
    Network Firewall IP set, and the evaluated export then denies every one of them."""
    nets = [f"198.51.{i // 256}.{i % 256}/32" for i in range(2000)] + ["2001:db8:dead::/48"]
    export = export_aws(ruleset_of(f"""\
version: 1
lists:
  threats: [{", ".join(nets)}]
deny:
  - name: threats
    to: ["@threats"]
  - name: smtp
    to: [203.0.113.0/24]
    ports: [25, 465-587]
    proto: tcp
"""))
    groups = json.loads(export.files["aws-network-firewall-rule-groups.json"])["RuleGroups"]
    (group,) = [g for g in groups if g["RuleGroupName"] == "outguard-deny-addresses"]
    ip_sets = group["RuleGroup"]["RuleVariables"]["IPSets"]
    assert sum(len(s["Definition"]) for s in ip_sets.values()) == 2000 + 1 + 1
    rules = group["RuleGroup"]["RulesSource"]["RulesString"].splitlines()
    assert rules[-1].startswith("drop tcp $HOME_NET any -> $OG_DENY_2_V4 [25,465:587] ")
    assert len({r.split("sid:")[1] for r in rules}) == len(rules)
    for dst, port, verdict in (("198.51.7.207", 443, "deny"), ("2001:db8:dead::9", 80, "deny"),
                               ("203.0.113.9", 500, "deny"), ("203.0.113.9", 443, "allow"),
                               ("192.0.2.1", 443, "allow")):
        probe = Probe(dst=dst, port=port, proto="tcp")
        assert aws.network_firewall(export.files, probe) == verdict, (dst, port)
    (threats,) = [f for f in export.fidelity if f.rule == "deny:threats"]
    assert "Network Firewall IP-set rule group" in threats.how
