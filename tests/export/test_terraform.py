"""Terraform JSON (`outguard-<cloud>.tf.json`) of the aws, azure and gcp targets, validated
against the providers' schema documents (tests/export/terraform_schemas/) over the shared and
cloud policies and a 6,000-entry list, and the same rules as the REST/ARM files."""

from __future__ import annotations

import json

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


def test_the_check_can_fail() -> None:
    doc = {"resource": {"aws_network_acl_rule": {"x": {"network_acl_id": "a", "rule_number": "1",
                                                       "protocol": "6", "bogus": 1}},
                        "aws_nope": {"y": {}}},
           "variable": {}, "other": 1}
    errors = check(json.dumps(doc), "aws")
    assert "aws_network_acl_rule.x.bogus: not an attribute or block of the schema" in errors
    assert "aws_network_acl_rule.x.rule_action: required" in errors
    assert "aws_network_acl_rule.x.rule_number: '1' is not number" in errors
    assert "resource aws_nope: not in the aws schema" in errors
    assert "other: not a top-level key of Terraform JSON" in errors
    ref = {"resource": {"aws_security_group": {"g": {"vpc_id": "${var.missing}"}}}}
    assert check(json.dumps(ref), "aws") == ["${var.missing}: var.missing is not declared"]


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
