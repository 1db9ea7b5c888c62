"""`outguard-gcp.tf.json`: the `gcp` export as Terraform (hashicorp/google provider).

Place in the data flow: `gcp.plan` (`GcpPlan`) → `terraform_gcp` → `TfDoc`.

The global network firewall policy `outguard-egress`, its rules, its address groups and its
association with `var.network`. The rules target `var.target_service_accounts` (default: the
service account `outguard-egress@<project>.iam.gserviceaccount.com`) or, when set,
`var.target_secure_tags`. The network's `network_firewall_policy_enforcement_order` belongs to
the `google_compute_network` resource, which this file does not own: set it to
BEFORE_CLASSIC_FIREWALL there (the comment on the association says so).
"""

from __future__ import annotations

from typing import Any

from outguard.export.gcp_plan import GcpPlan
from outguard.export.terraform import TfDoc, ref

SOURCE, VERSION = "hashicorp/google", ">= 5.20"


def _match(match: dict[str, Any], groups: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"layer4_configs": [
        {"ip_protocol": c["ipProtocol"]} | ({"ports": c["ports"]} if "ports" in c else {})
        for c in match["layer4Configs"]]}
    if "destIpRanges" in match:
        body["dest_ip_ranges"] = match["destIpRanges"]
    if "destFqdns" in match:
        body["dest_fqdns"] = match["destFqdns"]
    if "destAddressGroups" in match:
        body["dest_address_groups"] = [ref(groups[p.rsplit("/", 1)[-1]])
                                       for p in match["destAddressGroups"]]
    return body


def terraform_gcp(gcp: GcpPlan, description: str) -> str:
    doc = TfDoc("google", SOURCE, VERSION)
    project = doc.variable("project", "the project of the network")
    doc.variable("network", "the network's self link (projects/P/global/networks/N)")
    doc.variable("target_service_accounts", "the rules apply to VMs running as these (empty:"
                 " outguard-egress@<project>.iam.gserviceaccount.com)", type_="list(string)",
                 default=list(gcp.options.service_accounts), has_default=True)
    doc.variable("target_secure_tags", "or to VMs with these secure tags (tagValues/…)",
                 type_="list(string)", default=list(gcp.options.secure_tags), has_default=True)
    accounts = doc.local("target_service_accounts",
                         "${length(var.target_secure_tags) > 0 ? [] : length("
                         "var.target_service_accounts) > 0 ? var.target_service_accounts : "
                         "[\"outguard-egress@${var.project}.iam.gserviceaccount.com\"]}")
    groups: dict[str, str] = {}
    for group in gcp.address_groups:
        groups[group["name"]] = doc.resource("google_network_security_address_group",
                                             group["name"], {
            "name": group["name"], "parent": f"projects/{project}", "location": "global",
            "type": group["type"], "capacity": group["capacity"], "items": group["items"],
            "description": group["description"]})  # purpose: DEFAULT, the provider's default
    policy = doc.resource("google_compute_network_firewall_policy", "outguard", {
        "name": gcp.options.policy, "project": project, "description": description})
    for rule in gcp.rules:
        doc.resource("google_compute_network_firewall_policy_rule", rule["ruleName"], {
            "firewall_policy": ref(policy, "name"), "project": project,
            "priority": rule["priority"], "action": rule["action"],
            "direction": rule["direction"], "rule_name": rule["ruleName"],
            "description": rule.get("description", ""), "enable_logging": rule["enableLogging"],
            "target_service_accounts": accounts,
            "dynamic": {"target_secure_tags": {"for_each": "${var.target_secure_tags}",
                                               "content": {"name": "${target_secure_tags.value}"}}},
            "match": _match(rule["match"], groups)})
    doc.resource("google_compute_network_firewall_policy_association", "outguard", {
        "//": "set network_firewall_policy_enforcement_order = \"BEFORE_CLASSIC_FIREWALL\" on"
              " this network's google_compute_network: by default classic VPC rules decide first",
        "name": f"{gcp.options.policy}-association", "project": project,
        "attachment_target": "${var.network}", "firewall_policy": ref(policy, "name")})
    return doc.text()
