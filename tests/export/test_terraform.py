"""Terraform JSON (`outguard-<cloud>.tf.json`) of the aws, azure and gcp targets, validated
against hand-written subsets of the providers' resource schemas (tests/export/terraform_check.py
and the vendor_terraform_* models) over the shared and cloud policies and a 6,000-entry list,
and the same rules as the REST/ARM files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from outguard.export.aws import export_aws
from outguard.export.azure import export_azure
from outguard.export.gcp import export_gcp
from tests.export.cloud_inputs import cloud_policy_names, ruleset
from tests.export.terraform_check import check
from tests.export.test_cloud_sdk import CASES, _ruleset

TARGETS = {"aws": (export_aws, "outguard-aws.tf.json", "aws"),
           "azure": (export_azure, "outguard-azure.tf.json", "azurerm"),
           "gcp": (export_gcp, "outguard-gcp.tf.json", "google")}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("policy", CASES)
def test_terraform_fits_the_provider_schema(target: str, policy: str) -> None:
    export, name, provider = TARGETS[target]
    assert check(export(_ruleset(policy)).files[name], provider) == []


def test_the_document_check_can_fail() -> None:
    doc = {"resource": {"aws_network_acl_rule": {"x": {"network_acl_id": "a", "rule_number": "1",
                                                       "protocol": "6", "bogus": 1}},
                        "aws_nope": {"y": {}}},
           "variable": {}, "other": 1}
    errors = check(json.dumps(doc), "aws")
    assert "aws_network_acl_rule.x.bogus: Extra inputs are not permitted" in errors
    assert "aws_network_acl_rule.x.rule_action: Field required" in errors
    assert "aws_network_acl_rule.x.rule_number: Input should be a valid integer" in errors
    assert "resource aws_nope: not a resource outguard writes for aws" in errors
    assert "other: not a top-level key of Terraform JSON" in errors
    ref = {"resource": {"aws_security_group": {"g": {"vpc_id": "${var.missing}"}}}}
    assert check(json.dumps(ref), "aws") == ["${var.missing}: var.missing is not declared"]


Body = dict[str, Any]


def _set(key: str, value: Any) -> Callable[[Body], None]:
    return lambda body: body.update({key: value})


def _rename(key: str, new: str) -> Callable[[Body], None]:
    return lambda body: body.update({new: body.pop(key)})


def _drop(key: str) -> Callable[[Body], None]:
    return lambda body: body.pop(key) and None


def _in(path: str, mutate: Callable[[Body], None]) -> Callable[[Body], None]:
    """Mutate the block at a dotted path (list indexes as numbers) of the resource body."""
    def apply(body: Body) -> None:
        node: Any = body
        for key in path.split("."):
            node = node[int(key) if key.isdigit() else key]
        mutate(node)
    return apply


NACL, SG_RULE, NFW = "aws_network_acl_rule", "aws_vpc_security_group_egress_rule", \
    "aws_networkfirewall_rule_group"
NSG, FW_GROUP, GCP_RULE = "azurerm_network_security_rule", \
    "azurerm_firewall_policy_rule_collection_group", "google_compute_network_firewall_policy_rule"
NOT_A_NETWORK = "does not appear to be an IPv4 or IPv6 network"
# name: (target, policy, resource type, which body (has this key/value), mutation, the error)
BROKEN: dict[str, tuple[str, str, str, tuple[str, Any], Callable[[Body], None], str]] = {
    "aws-typo": ("aws", "cases", NACL, ("egress", True), _rename("rule_action", "rule_acton"),
                 r"\.rule_acton: Extra inputs are not permitted"),
    "aws-missing": ("aws", "cases", NACL, ("egress", True), _drop("rule_action"),
                    r"\.rule_action: Field required"),
    "aws-enum": ("aws", "cases", NACL, ("egress", True), _set("rule_action", "Allow"),
                 r"rule_action: Input should be 'allow' or 'deny'"),
    "aws-string-number": ("aws", "cases", NACL, ("egress", True), _set("rule_number", "100"),
                          r"rule_number: Input should be a valid integer"),
    "aws-rule-number": ("aws", "cases", NACL, ("egress", True), _set("rule_number", 32767),
                        r"rule_number: Input should be less than or equal to 32766"),
    "aws-nacl-ports": ("aws", "cases", NACL, ("protocol", "6"), _drop("to_port"),
                       "from_port and to_port exactly for protocols 6 and 17"),
    "aws-computed-id": ("aws", "cases", SG_RULE, ("ip_protocol", "tcp"), _set("id", "sgr-1"),
                        r"\.id: Extra inputs are not permitted"),
    "aws-bad-cidr": ("aws", "cases", SG_RULE, ("ip_protocol", "tcp"), lambda b: b.update(
        cidr_ipv4="203.0.113.300/32", cidr_ipv6=None), "cidr_ipv4: Value error, .*" + NOT_A_NETWORK),
    "aws-family": ("aws", "cases", SG_RULE, ("ip_protocol", "tcp"), lambda b: b.update(
        cidr_ipv4="2001:db8::/32", cidr_ipv6=None), "2001:db8::/32 is not an IPv4 CIDR"),
    "aws-ports-for-all": ("aws", "cases", SG_RULE, ("ip_protocol", "-1"), _set("from_port", 0),
                          "ip_protocol -1 takes no from_port/to_port"),
    "aws-description": ("aws", "cases", SG_RULE, ("ip_protocol", "tcp"), _set(
        "description", "outguard allow:web <api>"), r"description: String should match pattern"),
    "aws-nfw-enum": ("aws", "cloud-fqdn", NFW, ("type", "STATEFUL"), _in(
        "rule_group.rules_source.rules_source_list", _set("generated_rules_type", "ALLOW")),
        r"generated_rules_type: Input should be 'ALLOWLIST'"),
    "aws-nfw-wildcard": ("aws", "cloud-fqdn", NFW, ("type", "STATEFUL"), _in(
        "rule_group.rules_source.rules_source_list", _set("targets", ["*.cdn.example.test"])),
        r"targets\.0: String should match pattern"),
    "aws-nfw-suricata-set": ("aws", "cloud-mixed", NFW, ("name", "outguard-deny-addresses"), _in(
        "rule_group.rule_variables.ip_sets.0", _set("key", "OTHER")),
        r"\$OG_DENY_\w+ is no IP set of the group"),
    "aws-nfw-suricata-form": ("aws", "cloud-mixed", NFW, ("name", "outguard-deny-addresses"), _in(
        "rule_group.rules_source", _set("rules_string", "drop tcp any any -> any any (sid:1;)\n")),
        r"not a rule outguard writes"),
    "aws-dnsfw-block": ("aws", "cloud-dns", "aws_route53_resolver_firewall_rule",
                        ("action", "BLOCK"), _drop("block_response"),
                        "block_response exactly for BLOCK rules"),
    "aws-assoc-priority": ("aws", "cloud-dns", "aws_route53_resolver_firewall_rule_group_association",
                           ("vpc_id", "${var.vpc_id}"), _set("priority", 50),
                           r"priority: Input should be greater than or equal to 100"),
    "azure-protocol": ("azure", "cases", NSG, ("access", "Allow"), _set("protocol", "TCP"),
                       r"protocol: Input should be 'Tcp', 'Udp'"),
    "azure-priority": ("azure", "cases", NSG, ("access", "Allow"), _set("priority", 4097),
                       r"priority: Input should be less than or equal to 4096"),
    "azure-description": ("azure", "cases", NSG, ("access", "Allow"), _set("description", "x" * 141),
                          r"description: String should have at most 140 characters"),
    "azure-both-ports": ("azure", "cases", NSG, ("destination_port_range", "443"), _set(
        "destination_port_ranges", ["80"]), "exactly one of destination_port_range and"),
    "azure-port": ("azure", "cases", NSG, ("destination_port_range", "443"), _set(
        "destination_port_range", "443-80"), "is not a port, a range lo-hi or"),
    "azure-fw-protocol": ("azure", "cloud-fqdn", FW_GROUP, ("name", "outguard"), _in(
        "network_rule_collection.0.rule.0", _set("protocols", ["Tcp"])),
        r"protocols\.0: Input should be 'Any', 'TCP', 'UDP' or 'ICMP'"),
    "azure-collection-action": ("azure", "cloud-fqdn", FW_GROUP, ("name", "outguard"), _in(
        "network_rule_collection.0", _set("action", "allow")), "Input should be 'Allow' or 'Deny'"),
    "azure-ipgroup-cidr": ("azure", "cloud-dns", "azurerm_ip_group", ("location", "${var.location}"),
                           lambda b: b["cidrs"].append("198.51.100.0/33"), NOT_A_NETWORK),
    "gcp-action": ("gcp", "cases", GCP_RULE, ("direction", "EGRESS"), _set("action", "Allow"),
                   r"action: Input should be 'allow', 'deny'"),
    "gcp-no-match": ("gcp", "cases", GCP_RULE, ("direction", "EGRESS"), _drop("match"),
                     r"\.match: Field required"),
    "gcp-rule-name": ("gcp", "cases", GCP_RULE, ("direction", "EGRESS"), _set("rule_name", "Web_API"),
                      r"rule_name: String should match pattern"),
    "gcp-protocol": ("gcp", "cases", GCP_RULE, ("direction", "EGRESS"), _in(
        "match.layer4_configs.0", _set("ip_protocol", "tcpp")), "ip_protocol 'tcpp'"),
    "gcp-icmp-ports": ("gcp", "cases", GCP_RULE, ("action", "allow"), _in(
        "match.layer4_configs.0", lambda c: c.update(ip_protocol="icmp", ports=["443"])),
        "ports only for tcp, udp and sctp"),
    "gcp-wildcard-fqdn": ("gcp", "cloud-fqdn", GCP_RULE, ("action", "allow"), _in(
        "match", _set("dest_fqdns", ["*.cdn.example.test"])),
        r"dest_fqdns\.0: String should match pattern"),
    "gcp-mixed-families": ("gcp", "cases", GCP_RULE, ("action", "allow"), _in(
        "match", _set("dest_ip_ranges", ["203.0.113.0/24", "2001:db8::/32"])),
        "dest_ip_ranges of both address families"),
    "gcp-group-family": ("gcp", "cases", "google_network_security_address_group", ("type", "IPV4"),
                         lambda b: b["items"].__setitem__(0, "2001:db8::/48"),
                         "an item of the wrong family in a IPV4 address group"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_resource_models_can_fail(case: str) -> None:
    """Each model refuses a wrong export: the exact one passes, the broken one names its fault."""
    target, policy, kind, (key, value), mutate, error = BROKEN[case]
    export, name, provider = TARGETS[target]
    doc = json.loads(export(_ruleset(policy)).files[name])
    assert check(json.dumps(doc), provider) == []
    body = next(b for b in doc["resource"][kind].values() if b.get(key) == value)
    mutate(body)
    errors = check(json.dumps(doc), provider)
    assert any(re.search(error, e) for e in errors), errors


@pytest.mark.parametrize("policy", cloud_policy_names())
def test_terraform_holds_the_same_rules(policy: str) -> None:
    rs = ruleset(policy)
    aws = export_aws(rs).files
    tf = json.loads(aws["outguard-aws.tf.json"])["resource"]
    perms = json.loads(aws["aws-security-group-egress.json"])["IpPermissions"]
    cidrs = sum(len(p.get("IpRanges", [])) + len(p.get("Ipv6Ranges", [])) for p in perms)
    assert len(tf.get("aws_vpc_security_group_egress_rule", {})) == cidrs
    entries = json.loads(aws["aws-network-acl-egress.json"])["Entries"]
    assert sorted(r["rule_number"] for r in tf.get("aws_network_acl_rule", {}).values()) == sorted(
        e["RuleNumber"] for e in entries)
    gcp = export_gcp(rs).files
    rules = json.loads(gcp["gcp-firewall-policy-rules.json"])
    tf_rules = json.loads(gcp["outguard-gcp.tf.json"])["resource"][
        "google_compute_network_firewall_policy_rule"]
    assert sorted(r["priority"] for r in tf_rules.values()) == [r["priority"] for r in rules]
    azure = export_azure(rs).files
    nsg = json.loads(azure["azure-nsg-rules.json"])["resources"]
    tf_nsg = json.loads(azure["outguard-azure.tf.json"])["resource"].get(
        "azurerm_network_security_rule", {})
    assert sorted(r["priority"] for r in tf_nsg.values()) == sorted(
        r["properties"]["priority"] for r in nsg)
