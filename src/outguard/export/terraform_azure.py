"""`outguard-azure.tf.json`: the `azure` export as Terraform (hashicorp/azurerm provider).

Place in the data flow: the `azure` export's NSG rules and firewall template → `terraform_azure`
→ `TfDoc`.

One `azurerm_network_security_rule` per NSG rule of `var.network_security_group_name` (the NSG
exists; Terraform manages only these rules, and destroys those a later policy drops), and,
when the export has a firewall policy, its IP groups and the rule collection group `outguard`
of `var.firewall_policy_id`.
"""

from __future__ import annotations

from typing import Any

from outguard.export.terraform import TfDoc, ref

SOURCE, VERSION = "hashicorp/azurerm", ">= 3.90"
_PORTS = {"destinationPortRange": "destination_port_range",
          "destinationPortRanges": "destination_port_ranges",
          "destinationAddressPrefix": "destination_address_prefix",
          "destinationAddressPrefixes": "destination_address_prefixes"}


def _nsg_rule(doc: TfDoc, rule: dict[str, Any]) -> None:
    props = rule["properties"]
    body: dict[str, Any] = {
        "name": rule["name"], "resource_group_name": "${var.resource_group_name}",
        "network_security_group_name": "${var.network_security_group_name}",
        "priority": props["priority"], "direction": props["direction"],
        "access": props["access"], "protocol": props["protocol"],
        "source_port_range": "*", "source_address_prefix": "*",
        "description": props["description"]}
    body |= {tf: props[arm] for arm, tf in _PORTS.items() if arm in props}
    doc.resource("azurerm_network_security_rule", rule["name"], body)


def _network_rule(rule: dict[str, Any], groups: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"name": rule["name"], "description": rule["description"],
                            "protocols": rule["ipProtocols"], "source_addresses": ["*"],
                            "destination_ports": rule["destinationPorts"]}
    if "destinationAddresses" in rule:
        body["destination_addresses"] = rule["destinationAddresses"]
    if "destinationFqdns" in rule:
        body["destination_fqdns"] = rule["destinationFqdns"]
    if "destinationIpGroups" in rule:
        body["destination_ip_groups"] = [ref(groups[g.split("'")[3]])
                                         for g in rule["destinationIpGroups"]]
    return body


def _app_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {"name": rule["name"], "description": rule["description"], "source_addresses": ["*"],
            "destination_fqdns": rule["targetFqdns"],
            "protocols": [{"type": p["protocolType"], "port": p["port"]}
                          for p in rule["protocols"]]}


def _firewall(doc: TfDoc, firewall: dict[str, Any]) -> None:
    groups: dict[str, str] = {}
    for res in firewall["resources"]:
        if res["type"] == "Microsoft.Network/ipGroups":
            groups[res["name"]] = doc.resource("azurerm_ip_group", res["name"], {
                "name": res["name"], "resource_group_name": "${var.resource_group_name}",
                "location": "${var.location}", "cidrs": res["properties"]["ipAddresses"]})
    (group,) = [r for r in firewall["resources"] if r["type"].endswith("ruleCollectionGroups")]
    body: dict[str, Any] = {"name": "outguard", "firewall_policy_id": "${var.firewall_policy_id}",
                            "priority": "${var.firewall_rule_collection_group_priority}"}
    for coll in group["properties"]["ruleCollections"]:
        network = all(r["ruleType"] == "NetworkRule" for r in coll["rules"])
        rules = [_network_rule(r, groups) if network else _app_rule(r) for r in coll["rules"]]
        kind = "network_rule_collection" if network else "application_rule_collection"
        body.setdefault(kind, []).append({"name": coll["name"], "priority": coll["priority"],
                                          "action": coll["action"]["type"], "rule": rules})
    doc.resource("azurerm_firewall_policy_rule_collection_group", "outguard", body)


def terraform_azure(rules: list[dict[str, Any]], firewall: dict[str, Any] | None) -> str:
    doc = TfDoc("azurerm", SOURCE, VERSION)
    doc.doc["provider"] = {"azurerm": {"features": {}}}
    doc.variable("resource_group_name", "the resource group of the NSG (and the IP groups)")
    doc.variable("network_security_group_name", "the NSG of the protected servers")
    for rule in rules:
        _nsg_rule(doc, rule)
    if firewall is not None:
        doc.variable("location", "where the IP groups go")
        doc.variable("firewall_policy_id", "the Azure Firewall Policy that gets the rules")
        doc.variable("firewall_rule_collection_group_priority", "the group's priority",
                     type_="number", default=1000, has_default=True)
        _firewall(doc, firewall)
    return doc.text()
