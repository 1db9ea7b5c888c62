"""`outguard-aws.tf.json`: the `aws` export as Terraform (hashicorp/aws provider).

Place in the data flow: the `aws` export's requests (security-group atoms, network-ACL entries,
Network Firewall rule groups, DNS Firewall calls) → `terraform_aws` → `TfDoc`.

The security group is a resource of its own (`aws_security_group.outguard` in `var.vpc_id`):
when Terraform creates a group it removes the allow-all egress AWS puts in, so the group holds
exactly the `aws_vpc_security_group_egress_rule`s. The network-ACL entries go into
`var.network_acl_id` (the subnet's ACL, shared with other machines: Terraform manages only
these entries). The DNS Firewall rule group is associated with `var.vpc_id`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outguard.export.terraform import TfDoc, ref

if TYPE_CHECKING:
    from outguard.export.aws_atoms import Atom

SOURCE, VERSION = "hashicorp/aws", ">= 5.40"


def _egress(doc: TfDoc, group: str, atom: Atom, desc: str) -> None:
    body: dict[str, Any] = {"security_group_id": ref(group), "ip_protocol": atom.proto,
                            "description": desc}
    body["cidr_ipv6" if atom.v6 else "cidr_ipv4"] = atom.cidr
    if atom.proto != "-1":
        body |= {"from_port": atom.from_port, "to_port": atom.to_port}
    doc.resource("aws_vpc_security_group_egress_rule",
                 f"og_{atom.proto}_{atom.from_port}_{atom.to_port}_{atom.cidr}".replace("-1", "all"),
                 body)


def _nacl(doc: TfDoc, acl: str, entry: dict[str, Any]) -> None:
    body: dict[str, Any] = {"network_acl_id": acl, "rule_number": entry["RuleNumber"],
                            "egress": True, "protocol": entry["Protocol"],
                            "rule_action": entry["RuleAction"]}
    if "CidrBlock" in entry:
        body["cidr_block"] = entry["CidrBlock"]
    else:
        body["ipv6_cidr_block"] = entry["Ipv6CidrBlock"]
    if "PortRange" in entry:
        body |= {"from_port": entry["PortRange"]["From"], "to_port": entry["PortRange"]["To"]}
    if "IcmpTypeCode" in entry:
        body |= {"icmp_type": -1, "icmp_code": -1}
    doc.resource("aws_network_acl_rule", f"og_{entry['RuleNumber']}", body)


def _rule_group(doc: TfDoc, group: dict[str, Any]) -> None:
    source = group["RuleGroup"]["RulesSource"]
    body: dict[str, Any]
    if "RulesString" in source:
        ip_sets = group["RuleGroup"]["RuleVariables"]["IPSets"]
        body = {"rule_variables": {"ip_sets": [
                    {"key": name, "ip_set": {"definition": ip_set["Definition"]}}
                    for name, ip_set in ip_sets.items()]},
                "rules_source": {"rules_string": source["RulesString"]}}
    else:
        src = source["RulesSourceList"]
        body = {"rules_source": {"rules_source_list": {
            "generated_rules_type": src["GeneratedRulesType"],
            "target_types": src["TargetTypes"], "targets": src["Targets"]}}}
    doc.resource("aws_networkfirewall_rule_group", group["RuleGroupName"], {
        "name": group["RuleGroupName"], "type": group["Type"], "capacity": group["Capacity"],
        "description": group["Description"], "rule_group": body})


def _dns_firewall(doc: TfDoc, calls: dict[str, Any]) -> None:
    lists = {}
    for update in calls["UpdateFirewallDomains"]:
        name = update["FirewallDomainListId"]
        lists[name] = doc.resource("aws_route53_resolver_firewall_domain_list", name, {
            "name": name, "domains": update["Domains"]})
    group = doc.resource("aws_route53_resolver_firewall_rule_group", "outguard",
                         {"name": calls["CreateFirewallRuleGroup"]["Name"]})
    for rule in calls["CreateFirewallRule"]:
        body = {"name": rule["Name"], "action": rule["Action"], "priority": rule["Priority"],
                "firewall_rule_group_id": ref(group),
                "firewall_domain_list_id": ref(lists[rule["FirewallDomainListId"]])}
        if "BlockResponse" in rule:
            body["block_response"] = rule["BlockResponse"]
        doc.resource("aws_route53_resolver_firewall_rule", rule["Name"], body)
    assoc = calls["AssociateFirewallRuleGroup"]
    doc.resource("aws_route53_resolver_firewall_rule_group_association", "outguard", {
        "name": assoc["Name"], "priority": assoc["Priority"],
        "firewall_rule_group_id": ref(group), "vpc_id": "${var.vpc_id}"})


def terraform_aws(desired: dict[Atom, str], entries: list[dict[str, Any]],
                  groups: list[dict[str, Any]], dnsfw: dict[str, Any] | None,
                  digest: str) -> str:
    doc = TfDoc("aws", SOURCE, VERSION)
    doc.variable("vpc_id", "the VPC of the protected servers")
    group = doc.resource("aws_security_group", "outguard", {
        "name": "outguard-egress", "description": f"outguard policy {digest[:12]}",
        "vpc_id": "${var.vpc_id}"})
    for atom, desc in sorted(desired.items()):
        _egress(doc, group, atom, desc)
    if entries:
        acl = doc.variable("network_acl_id", "the network ACL of the protected servers' subnet")
        for entry in entries:
            _nacl(doc, acl, entry)
    for rule_group in groups:
        _rule_group(doc, rule_group)
    if dnsfw is not None:
        _dns_firewall(doc, dnsfw)
    return doc.text()
