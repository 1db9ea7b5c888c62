"""The `azure` target: a network security group's outbound rules as separate ARM rule
resources, and the whole policy as an Azure Firewall rule collection group (`azure_firewall`).

Place in the data flow: `Ruleset` → `view.views` → ARM templates (`azure-nsg-rules.json`,
`azure-firewall-policy.json`) and `azure-nsg-prune.sh`; `terraform_azure` writes the same as
Terraform.

NSG rules are evaluated by priority, lowest first, and the first match decides: deny rules get
the lowest numbers, allow rules the next ones, and a deny-all at 4096 (the last priority a user
may set) shuts the built-in AllowVnetOutBound and AllowInternetOutBound, so the order is
outguard's: deny, allow, default. IPv4 and IPv6 prefixes go into separate rules.

Each rule is its own `networkSecurityGroups/securityRules` resource of an NSG that exists: a
template that declared the NSG with inline `securityRules` would, on every redeployment,
replace all of the group's rules, the inbound ones (SSH!) included. Incremental deployments of
child rules leave other rules alone, so `azure-nsg-prune.sh` deletes the `og-` outbound rules a
previous export made and this one no longer has. Azure compares names without case: names
come from a `NameBook`, so `Web` and `web` stay two rules.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from outguard.export.azure_firewall import arm_text, firewall_policy, template
from outguard.export.cloud_names import NameBook, azure_name
from outguard.export.fidelity import Export
from outguard.export.terraform_azure import terraform_azure
from outguard.export.view import Ledger, RuleView, common_notes, default_note, port_texts, views
from outguard.ruleset.ir import Ruleset

__all__ = ["arm_text", "export_azure", "nsg_name", "security_rules", "template"]

FIRST_PRIORITY, LAST_PRIORITY = 100, 4096
MAX_RULES = 1000  # security rules per NSG
MAX_PREFIXES = 4000  # addresses and prefixes per NSG, source and destination together
API_VERSION = "2023-09-01"
_PROTO = {"tcp": ["Tcp"], "udp": ["Udp"], "icmp": ["Icmp"]}


def nsg_name(text: str) -> str:
    """A valid NSG rule name (kept for callers of the earlier API)."""
    return azure_name(text)


def _protocols(view: RuleView) -> list[str]:
    if view.proto == "any":
        return ["Tcp", "Udp"] if view.ports else ["*"]
    return _PROTO[view.proto]


def _over(view: RuleView, ledger: Ledger, count: int) -> None:
    """A rule whose prefixes do not fit: left out, so that the NSG still deploys its deny-all
    (a refused deny-all would leave the built-in AllowInternetOutBound in force)."""
    where = (f"past Azure's {MAX_PREFIXES} addresses per NSG ({count} with it): left out of"
             " the NSG")
    if view.deny:
        ledger.approx(view.key, where + "; only the Azure Firewall policy denies it (IPv4 only)")
    else:
        ledger.drop(view.key, where + ", whose deny-all then blocks this traffic (the Azure"
                              " Firewall policy holds it in IP groups)")
    ledger.warn(f"more destination prefixes than Azure's {MAX_PREFIXES} per NSG: the rules past"
                " the limit are left out of the NSG")


def security_rules(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    """The NSG's outbound rules in priority order: name and properties of each."""
    rules: list[dict[str, Any]] = []
    book = NameBook(azure_name, 80, sep="_")
    used = 0
    for view in views(ruleset):
        if not common_notes(view, ledger, "an NSG", mode=ruleset.mode):
            continue
        ports = port_texts(view.ports) or ["*"]
        for proto in _protocols(view):
            for version in (4, 6):
                cidrs = list(view.cidrs(version))
                if not cidrs:
                    continue
                if used + len(cidrs) > MAX_PREFIXES - 1:  # one is the deny-all's
                    _over(view, ledger, used + len(cidrs))
                    continue
                used += len(cidrs)
                suffix = f"-{proto.lower()}" if proto != "*" else ""
                props: dict[str, Any] = {
                    "description": arm_text(f"{view.key}: {view.rule.comment or ''}"[:140]),
                    "protocol": proto, "access": "Deny" if view.deny else "Allow",
                    "direction": "Outbound", "sourceAddressPrefix": "*", "sourcePortRange": "*"}
                props |= ({"destinationAddressPrefix": cidrs[0]} if len(cidrs) == 1
                          else {"destinationAddressPrefixes": cidrs})
                props |= ({"destinationPortRange": ports[0]} if len(ports) == 1
                          else {"destinationPortRanges": ports})
                name = book.take(f"og-{view.rule.section}-{view.rule.name}{suffix}-v{version}")
                rules.append({"name": name, "properties": props})
        if view.fqdns and not view.has_addresses and not view.deny:
            ledger.drop(view.key, "names only: the NSG cannot hold them, so its deny-all blocks"
                                  " this traffic before the Azure Firewall rule can allow it")
    if ruleset.mode != "audit":
        rules.append({"name": "og-default-deny", "properties": {
            "description": "outguard default: deny every other outbound connection",
            "protocol": "*", "access": "Deny", "direction": "Outbound", "sourceAddressPrefix": "*",
            "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"}})
    if FIRST_PRIORITY + len(rules) - 1 > LAST_PRIORITY or len(rules) > MAX_RULES:
        ledger.warn(f"{len(rules)} NSG rules exceed Azure's limits ({MAX_RULES} rules per NSG,"
                    f" priorities {FIRST_PRIORITY}-{LAST_PRIORITY})")
    for i, rule in enumerate(rules):
        rule["properties"]["priority"] = FIRST_PRIORITY + i
    if ruleset.mode != "audit":
        rules[-1]["properties"]["priority"] = LAST_PRIORITY
    return rules


def _nsg_template(rules: list[dict[str, Any]]) -> dict[str, Any]:
    resources = [{"type": "Microsoft.Network/networkSecurityGroups/securityRules",
                  "apiVersion": API_VERSION,
                  "name": f"[concat(parameters('nsgName'), '/{r['name']}')]",
                  "properties": r["properties"]} for r in rules]
    return template(resources, {"nsgName": {"type": "string", "defaultValue": "outguard-egress"}})


def _prune_script(rules: list[dict[str, Any]]) -> str:
    keep = " ".join(shlex.quote(r["name"]) for r in rules)
    return f"""#!/bin/sh
# Delete the outbound og- rules of an NSG that this export no longer has (ARM's incremental
# deployments of azure-nsg-rules.json add and change rules, never delete them).
# usage: sh azure-nsg-prune.sh RESOURCE_GROUP NSG_NAME   (after deploying azure-nsg-rules.json)
set -eu
rg="$1"; nsg="$2"
keep=" {keep} "
az network nsg rule list --resource-group "$rg" --nsg-name "$nsg" \\
    --query "[?direction=='Outbound' && starts_with(name, 'og-')].name" --output tsv |
while IFS= read -r name; do
    case "$keep" in
        *" $name "*) ;;
        *) echo "deleting stale rule $name"
           az network nsg rule delete --resource-group "$rg" --nsg-name "$nsg" --name "$name" ;;
    esac
done
"""


def export_azure(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    rules = security_rules(ruleset, ledger)
    needs = any(v.fqdns for v in views(ruleset)) or any(
        "per NSG" in w for w in ledger.warnings)
    firewall = firewall_policy(ruleset, ledger) if needs else None
    if ruleset.dns is not None:
        ledger.approx("dns", "the dns: section is not exported: DNS is not forced through"
                             " outguard's resolver, names are those of export time")
    default_note(ruleset, ledger, "an NSG", logs="NSG flow logs")
    files = {"azure-nsg-rules.json": json.dumps(_nsg_template(rules), indent=2) + "\n",
             "azure-nsg-prune.sh": _prune_script(rules)}
    if firewall is not None:
        files["azure-firewall-policy.json"] = json.dumps(firewall, indent=2) + "\n"
    files["outguard-azure.tf.json"] = terraform_azure(rules, firewall)
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"dns": 1 << 29, "default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    return Export("azure", files, fidelity, ledger.warnings)
