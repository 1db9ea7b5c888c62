"""The validation tier of the cloud targets (issue 17): every request the aws, azure and gcp
exports hold is checked by the vendor's own SDK, over the shared policies, the cloud cases
(names in lists, `dns:`, wildcards, audit mode, colliding names) and a 6,000-entry list.

- aws: botocore's parameter validator with the EC2, Network Firewall and Route 53 Resolver
  service models (names, types, enums, lengths and required keys of each API call);
- azure: every resource of the ARM templates against azure-mgmt-network's models
  (`azure_models.check_template`: unknown keys, read-only keys, enum values, types);
- gcp: google-cloud-compute's and google-cloud-network-security's strict message types
  (`from_json` refuses an unknown field or a wrong type), and the enums the REST API takes.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from google.cloud import compute_v1
from google.cloud import network_security_v1 as network_security

from outguard.export.aws import export_aws
from outguard.export.azure import export_azure
from outguard.export.gcp import export_gcp
from outguard.ruleset.ir import Ruleset
from tests.export.azure_models import check_template
from tests.export.cloud_inputs import cloud_policy_names, ruleset, ruleset_of

BIG = "\n".join(f"  - '2001:db8:{i // 250:x}::{i % 250:x}'" for i in range(5700)) + "\n" + "\n".join(
    f"  - 198.51.100.{i}" for i in range(1, 255)) + "\n" + "\n".join(
    f"  - 203.0.113.{i}" for i in range(1, 47))
BIG_POLICY = f"""\
version: 1
deny:
  - name: bad
    to: ['@big']
allow:
  - name: web
    to: ['@big', api.example.test, '*.cdn.example.test']
    ports: [443]
    proto: tcp
lists:
  big:
{BIG}
"""
CASES = [*cloud_policy_names(), "big-list"]


def _ruleset(name: str) -> Ruleset:
    return ruleset_of(BIG_POLICY) if name == "big-list" else ruleset(name)


class Botocore:
    def __init__(self) -> None:
        self.session = botocore.session.get_session()
        self.validator = ParamValidator()

    def check(self, service: str, operation: str, params: dict[str, Any]) -> None:
        model = self.session.get_service_model(service).operation_model(operation)
        report = self.validator.validate(params, model.input_shape)
        assert not report.has_errors(), f"{operation}: {report.generate_report()}"
        problems = list(_limits(model.input_shape, params, operation))
        assert not problems, problems


def _limits(shape: Any, value: Any, where: str) -> Any:
    """What botocore leaves to the server: enum values and string/list length limits."""
    if shape.type_name == "structure":
        for key, member in shape.members.items():
            if key in value:
                yield from _limits(member, value[key], f"{where}.{key}")
    elif shape.type_name == "list":
        if len(value) > shape.metadata.get("max", len(value)):
            yield f"{where}: {len(value)} items, at most {shape.metadata['max']}"
        for i, item in enumerate(value):
            yield from _limits(shape.member, item, f"{where}[{i}]")
    elif shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            yield f"{where}: {value!r} is not one of {shape.enum}"
        if len(value) > shape.metadata.get("max", len(value)):
            yield f"{where}: {len(value)} characters, at most {shape.metadata['max']}"


@pytest.fixture(scope="module")
def boto() -> Botocore:
    return Botocore()


@pytest.mark.parametrize("policy", CASES)
def test_aws_requests_fit_the_service_models(policy: str, boto: Botocore) -> None:
    files = export_aws(_ruleset(policy)).files
    sg = json.loads(files["aws-security-group-egress.json"])
    boto.check("ec2", "AuthorizeSecurityGroupEgress", {"GroupId": "sg-1", **sg})
    revoke = json.loads(files["aws-security-group-revoke-default.json"])
    if revoke["IpPermissions"]:
        boto.check("ec2", "RevokeSecurityGroupEgress", {"GroupId": "sg-1", **revoke})
    for entry in json.loads(files["aws-network-acl-egress.json"])["Entries"]:
        boto.check("ec2", "CreateNetworkAclEntry", {"NetworkAclId": "acl-1", **entry})
        assert 1 <= entry["RuleNumber"] <= 32766
    for group in json.loads(files["aws-network-firewall-rule-groups.json"])["RuleGroups"]:
        boto.check("network-firewall", "CreateRuleGroup", group)
    if "aws-dns-firewall.json" in files:
        doc = json.loads(files["aws-dns-firewall.json"])
        for operation, calls in doc.items():
            for params in calls if isinstance(calls, list) else [calls]:
                boto.check("route53resolver", operation, params)


@pytest.mark.parametrize("policy", CASES)
def test_azure_templates_fit_the_sdk_models(policy: str) -> None:
    files = export_azure(_ruleset(policy)).files
    for name, content in files.items():
        if name.endswith(".json") and not name.endswith(".tf.json"):
            doc = json.loads(content)
            assert doc["$schema"].endswith("deploymentTemplate.json#")
            assert check_template(doc) == [], name


_ORDERS = set(compute_v1.Network.NetworkFirewallPolicyEnforcementOrder.__members__)
_DIRECTIONS = set(compute_v1.FirewallPolicyRule.Direction.__members__)


@pytest.mark.parametrize("policy", CASES)
def test_gcp_bodies_fit_the_strict_types(policy: str) -> None:
    files = export_gcp(_ruleset(policy)).files
    compute_v1.FirewallPolicy.from_json(files["gcp-firewall-policy.json"])
    for rule in json.loads(files["gcp-firewall-policy-rules.json"]):
        parsed = compute_v1.FirewallPolicyRule.from_json(json.dumps(rule))
        assert parsed.direction in _DIRECTIONS and parsed.action in ("allow", "deny")
        assert 0 <= parsed.priority < 2147483644
    compute_v1.FirewallPolicyAssociation.from_json(files["gcp-firewall-policy-association.json"])
    network = compute_v1.Network.from_json(files["gcp-network-patch.json"])
    assert network.network_firewall_policy_enforcement_order in _ORDERS
    for group in json.loads(files.get("gcp-address-groups.json", "[]")):
        parsed_group = network_security.AddressGroup.from_json(json.dumps(group))
        assert parsed_group.capacity >= len(parsed_group.items)


def test_the_checks_can_fail(boto: Botocore) -> None:
    """Each validator refuses a wrong request (so that the tests above mean something)."""
    with pytest.raises(AssertionError, match="LOGLIST"):
        boto.check("network-firewall", "CreateRuleGroup", {
            "RuleGroupName": "x", "Type": "STATEFUL", "Capacity": 10, "RuleGroup": {
                "RulesSource": {"RulesSourceList": {"Targets": ["a"], "TargetTypes": ["TLS_SNI"],
                                                    "GeneratedRulesType": "LOGLIST"}}}})
    assert check_template({"resources": [{
        "type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "x",
        "properties": {"ruleCollections": [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
                                            "rules": [{"ruleType": "NetworkRule",
                                                       "targetFqdns": ["a"]}]}]}}]}) != []
    with pytest.raises(Exception, match="destFqdn"):
        compute_v1.FirewallPolicyRule.from_json(json.dumps({"match": {"destFqdn": ["a"]}}))
