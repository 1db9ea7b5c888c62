"""The whole policy as an Azure Firewall Policy rule collection group, for the `azure` target:
addresses and host names as network rules (`destinationAddresses`, `destinationIpGroups`,
`destinationFqdns`), wildcards as application rules, `@list`s as IP groups.

Place in the data flow: `Ruleset` → `view.views` → `firewall_policy` → the ARM template
`azure-firewall-policy.json` (and `terraform_azure` reads the same template).

Azure Firewall processes every network rule collection before any application rule
collection, each kind in priority order, and denies what no rule allows. So: deny network
rules (100), allow network rules (200), deny application rules (300), allow application rules
(400), and the firewall's own default deny. Network rules match any protocol and port, names
too (the firewall resolves them: its DNS proxy must be on, and clients must use it), so a UDP
or ICMP name rule stays what it is; an application rule sees only HTTP and TLS (Host, SNI), so
only wildcards, which network rules do not take, go there. Azure Firewall filters IPv4 only:
IPv6 destinations are the NSG's alone. IP groups hold up to 5,000 entries; a bigger list is
split over several.
"""

from __future__ import annotations

from typing import Any

from outguard.export.cloud_names import NameBook, azure_name
from outguard.export.view import Ledger, RuleView, chunks, common_notes, port_texts, views
from outguard.ruleset.ir import Ruleset

API_VERSION = "2023-09-01"
IP_GROUP_SIZE = 5000
_PROTO = {"tcp": ["TCP"], "udp": ["UDP"], "icmp": ["ICMP"]}


def arm_text(text: str) -> str:
    """A literal ARM string: one that starts with '[' would be evaluated as an expression."""
    return "[" + text if text.startswith("[") else text


def template(resources: list[dict[str, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                       "deploymentTemplate.json#",
            "contentVersion": "1.0.0.0", "parameters": parameters, "resources": resources}


def _protocols(view: RuleView) -> list[str]:
    if view.proto == "any":
        return ["TCP", "UDP"] if view.ports else ["Any"]
    return _PROTO[view.proto]


def _app_protocols(view: RuleView) -> list[dict[str, Any]]:
    ports = {80, 443} if not view.ports else {
        p for p in (80, 443) if any(lo <= p <= hi for lo, hi in view.ports)}
    return [{"protocolType": "Http" if p == 80 else "Https", "port": p} for p in sorted(ports)]


class _Builder:
    def __init__(self, ruleset: Ruleset, ledger: Ledger) -> None:
        self.rs = ruleset
        self.ledger = ledger
        self.collections: dict[str, list[dict[str, Any]]] = {
            "deny-network": [], "allow-network": [], "deny-application": [],
            "allow-application": []}
        self.names = {k: NameBook(azure_name, 80, sep="_") for k in self.collections}
        self.ip_groups: list[dict[str, Any]] = []
        self.group_names = NameBook(azure_name, 80, sep="_")
        self.groups_of: dict[str, list[str]] = {}

    def ip_group_ids(self, key: str) -> list[str]:
        if key not in self.groups_of:
            el = self.rs.sources[key].elements
            items = list(el.v4) + list(el.v4_nets)
            ids = []
            for i, part in enumerate(chunks(items, IP_GROUP_SIZE)):
                name = self.group_names.take(f"og-{key.removeprefix('list:')}"
                                             + (f"-{i + 1}" if i else ""))
                self.ip_groups.append({
                    "type": "Microsoft.Network/ipGroups", "apiVersion": API_VERSION,
                    "name": name, "location": "[parameters('location')]",
                    "properties": {"ipAddresses": list(part)}})
                ids.append(f"[resourceId('Microsoft.Network/ipGroups', '{name}')]")
            self.groups_of[key] = ids
        return self.groups_of[key]

    def add(self, kind: str, view: RuleView, label: str, body: dict[str, Any]) -> None:
        rule = {"name": self.names[kind].take(label),
                "description": arm_text(view.key[:140]), "sourceAddresses": ["*"]} | body
        self.collections[kind].append(rule)

    def rule(self, view: RuleView) -> None:
        if not common_notes(view, self.ledger, "Azure Firewall", mode=self.rs.mode):
            return
        action = "deny" if view.deny else "allow"
        base = f"og-{view.rule.section}-{view.rule.name}"
        net: dict[str, Any] = {"ruleType": "NetworkRule", "ipProtocols": _protocols(view),
                               "destinationPorts": port_texts(view.ports) or ["*"]}
        if view.any_destination:
            self.add(f"{action}-network", view, base, net | {"destinationAddresses": ["*"]})
        if view.rule.inline:
            el = self.rs.sources[view.rule.inline].elements
            inline = list(el.v4) + list(el.v4_nets)
            if inline:
                self.add(f"{action}-network", view, base, net | {"destinationAddresses": inline})
        lists = [g for key in view.rule.lists for g in self.ip_group_ids(key)]
        if lists:
            self.add(f"{action}-network", view, f"{base}-lists", net | {"destinationIpGroups": lists})
        if view.names:
            self.add(f"{action}-network", view, f"{base}-fqdn", net | {"destinationFqdns":
                                                                         list(view.names)})
            self.ledger.approx(view.key, "names in Azure Firewall network rules: the firewall"
                                         " resolves them (its DNS proxy must be on and clients"
                                         " must use it as their DNS server)")
        if view.wildcards:
            self.wildcards(view, action, base)

    def wildcards(self, view: RuleView, action: str, base: str) -> None:
        protocols = _app_protocols(view) if view.proto in ("tcp", "any") else []
        if not protocols:
            self.ledger.note(view.key, "approximated" if view.has_addresses or view.names
                             else "dropped", "wildcards " + ", ".join(view.wildcards) + " left"
                             " out: Azure Firewall matches wildcards only in HTTP/HTTPS"
                             " application rules (ports 80 and 443)")
            return
        self.add(f"{action}-application", view, f"{base}-wildcards", {
            "ruleType": "ApplicationRule", "targetFqdns": list(view.wildcards),
            "protocols": protocols})
        how = ("wildcards as Azure Firewall application rules: HTTP/HTTPS on "
               + " and ".join(str(p["port"]) for p in protocols) + " only, by Host and SNI")
        if view.deny:
            how += ("; processed after every network rule, so an allow network rule for the"
                    " same traffic wins")
        self.ledger.approx(view.key, how)


def firewall_policy(ruleset: Ruleset, ledger: Ledger) -> dict[str, Any]:
    """The ARM template: IP groups and the rule collection group `outguard`."""
    builder = _Builder(ruleset, ledger)
    for view in views(ruleset):
        builder.rule(view)
    priority = {"deny-network": 100, "allow-network": 200, "deny-application": 300,
                "allow-application": 400}
    groups = [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
               "name": f"outguard-{kind}", "priority": priority[kind],
               "action": {"type": "Deny" if kind.startswith("deny") else "Allow"}, "rules": rules}
              for kind, rules in builder.collections.items() if rules]
    if ruleset.mode == "audit":
        groups.append({"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
                       "name": "outguard-audit-allow-all", "priority": 500,
                       "action": {"type": "Allow"}, "rules": [{
                           "ruleType": "NetworkRule", "name": "og-audit-allow-all",
                           "description": "outguard audit mode: allow all",
                           "sourceAddresses": ["*"], "destinationAddresses": ["*"],
                           "ipProtocols": ["Any"], "destinationPorts": ["*"]}]})
    group = {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
             "apiVersion": API_VERSION, "name": "[concat(parameters('firewallPolicyName'), '/outguard')]",
             "properties": {"priority": "[parameters('priority')]", "ruleCollections": groups}}
    if builder.ip_groups:
        group["dependsOn"] = [f"[resourceId('Microsoft.Network/ipGroups', '{g['name']}')]"
                              for g in builder.ip_groups]
    ledger.warn("Azure Firewall applies to traffic routed through it (a route 0.0.0.0/0 to the"
                " firewall) and filters IPv4 only; the NSG must let that traffic out too")
    return template([*builder.ip_groups, group], {
        "firewallPolicyName": {"type": "string"},
        "priority": {"type": "int", "defaultValue": 1000},
        "location": {"type": "string", "defaultValue": "[resourceGroup().location]"}})
