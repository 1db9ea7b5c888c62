"""The `azure` export target: a network security group's outbound rules as an ARM template, and
host names as Azure Firewall application rules (a firewall-policy rule collection group).

Place in the data flow: `Ruleset` → `view.views` → two ARM templates.

NSG rules are evaluated by priority, lowest first, and the first match decides: deny rules get
the lowest numbers, allow rules the next ones, and a deny-all at 4096 (the last priority a user
may set) shuts the built-in AllowVnetOutBound and AllowInternetOutBound, so the order is
outguard's: deny, allow, default. IPv4 and IPv6 prefixes go into separate rules.
"""

from __future__ import annotations

import json
import re
from typing import Any

from outguard.export.fidelity import Export
from outguard.export.view import Ledger, RuleView, common_notes, default_note, port_texts, views
from outguard.ruleset.ir import Ruleset

FIRST_PRIORITY, LAST_PRIORITY = 100, 4096
MAX_RULES = 1000  # security rules per NSG
MAX_PREFIXES = 4000  # addresses and prefixes per NSG, source and destination together
_PROTO = {"tcp": ["Tcp"], "udp": ["Udp"], "icmp": ["Icmp"]}


def nsg_name(text: str) -> str:
    """A valid NSG rule name: 1-80 of [A-Za-z0-9_.-], starting alphanumeric, ending in [\\w]."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:79]
    return name + "_" if not name[-1].isalnum() else name


def arm_text(text: str) -> str:
    """A literal ARM string: one that starts with '[' would be evaluated as an expression."""
    return "[" + text if text.startswith("[") else text


def _protocols(view: RuleView) -> list[str]:
    if view.proto == "any":
        return ["Tcp", "Udp"] if view.ports else ["*"]
    return _PROTO[view.proto]


def _security_rules(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for view in views(ruleset):
        if not common_notes(view, ledger, "an NSG", mode=ruleset.mode):
            continue
        if view.fqdns and not view.has_addresses:
            continue  # only in the Azure Firewall policy
        ports = port_texts(view.ports) or ["*"]
        for proto in _protocols(view):
            for version in (4, 6):
                cidrs = list(view.cidrs(version))
                if not cidrs:
                    continue
                suffix = f"-{proto.lower()}" if proto != "*" else ""
                name = nsg_name(f"og-{view.rule.section}-{view.rule.name}{suffix}-v{version}")
                props: dict[str, Any] = {
                    "description": arm_text((view.rule.comment or view.key)[:140]),
                    "protocol": proto, "access": "Deny" if view.deny else "Allow",
                    "direction": "Outbound", "sourceAddressPrefix": "*", "sourcePortRange": "*"}
                props |= ({"destinationAddressPrefix": cidrs[0]} if len(cidrs) == 1
                          else {"destinationAddressPrefixes": cidrs})
                props |= ({"destinationPortRange": ports[0]} if len(ports) == 1
                          else {"destinationPortRanges": ports})
                rules.append({"name": name, "properties": props})
    return rules


def _nsg(ruleset: Ruleset, ledger: Ledger) -> dict[str, Any]:
    rules = _security_rules(ruleset, ledger)
    if ruleset.mode != "audit":
        rules.append({"name": "og-default-deny", "properties": {
            "description": "outguard default: deny every other outbound connection",
            "protocol": "*", "access": "Deny", "direction": "Outbound", "sourceAddressPrefix": "*",
            "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"}})
    if FIRST_PRIORITY + len(rules) - 1 > LAST_PRIORITY or len(rules) > MAX_RULES:
        ledger.warn(f"{len(rules)} NSG rules exceed Azure's limits ({MAX_RULES} rules per NSG,"
                    f" priorities {FIRST_PRIORITY}-{LAST_PRIORITY})")
    prefixes = sum(len(r["properties"].get("destinationAddressPrefixes", [])) or 1 for r in rules)
    if prefixes > MAX_PREFIXES:
        ledger.warn(f"{prefixes} destination prefixes exceed Azure's {MAX_PREFIXES} per NSG")
    for i, rule in enumerate(rules):
        rule["properties"]["priority"] = FIRST_PRIORITY + i
    if ruleset.mode != "audit":
        rules[-1]["properties"]["priority"] = LAST_PRIORITY
    return _template([{
        "type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2023-09-01",
        "name": "[parameters('nsgName')]", "location": "[parameters('location')]",
        "properties": {"securityRules": rules}}],
        {"nsgName": {"type": "string", "defaultValue": "outguard-egress"},
         "location": {"type": "string", "defaultValue": "[resourceGroup().location]"}})


def _app_protocols(view: RuleView) -> list[dict[str, Any]]:
    ports = [p for lo, hi in view.ports for p in range(lo, hi + 1)][:64] if view.ports else [80, 443]
    out: list[dict[str, Any]] = []
    for port in ports:
        kinds = ["Http"] if port == 80 else ["Https"] if port == 443 else ["Http", "Https"]
        out.extend({"protocolType": kind, "port": port} for kind in kinds)
    return out


def _firewall_policy(ruleset: Ruleset, ledger: Ledger) -> dict[str, Any] | None:
    collections: dict[str, list[dict[str, Any]]] = {"Deny": [], "Allow": []}
    for view in views(ruleset):
        if not view.fqdns:
            continue
        if (view.owner() is not None and not view.deny) or (ruleset.mode == "audit" and view.deny):
            continue
        how = "names as Azure Firewall application rules: HTTP/HTTPS only"
        if not view.ports:
            how += ", on ports 80 and 443"
        elif any(hi - lo > 63 for lo, hi in view.ports) or sum(hi - lo + 1 for lo, hi in view.ports) > 64:
            how += ", on the first 64 ports of its ranges"
        ledger.approx(view.key, how)
        collections["Deny" if view.deny else "Allow"].append({
            "ruleType": "ApplicationRule", "name": nsg_name(f"og-{view.rule.name}"),
            "description": arm_text((view.rule.comment or view.key)[:140]), "sourceAddresses": ["*"],
            "targetFqdns": list(view.fqdns), "protocols": _app_protocols(view)})
    groups = [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
               "name": f"outguard-{action.lower()}", "priority": 100 if action == "Deny" else 200,
               "action": {"type": action}, "rules": rules}
              for action, rules in collections.items() if rules]
    if not groups:
        return None
    return _template([{
        "type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
        "apiVersion": "2023-09-01", "name": "[concat(parameters('firewallPolicyName'), '/outguard')]",
        "properties": {"priority": 1000, "ruleCollections": groups}}],
        {"firewallPolicyName": {"type": "string"}})


def _template(resources: list[dict[str, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                       "deploymentTemplate.json#",
            "contentVersion": "1.0.0.0", "parameters": parameters, "resources": resources}


def export_azure(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    nsg = _nsg(ruleset, ledger)
    for view in views(ruleset):
        if view.fqdns and not view.has_addresses and not view.deny and view.owner() is None:
            ledger.drop(view.key, "names only: the NSG cannot hold them, so its deny-all blocks"
                                  " this traffic before the Azure Firewall rule can allow it")
    policy = _firewall_policy(ruleset, ledger)
    default_note(ruleset, ledger, "an NSG", logs="NSG flow logs")
    files = {"azure-nsg.json": json.dumps(nsg, indent=2) + "\n"}
    if policy is not None:
        files["azure-firewall-policy.json"] = json.dumps(policy, indent=2) + "\n"
        ledger.warn("Azure Firewall application rules apply only to traffic routed through the"
                    " firewall; the NSG still needs to let that traffic out")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    return Export("azure", files, fidelity, ledger.warnings)
