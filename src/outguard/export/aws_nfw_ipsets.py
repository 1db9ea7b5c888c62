"""The deny rules' addresses as an AWS Network Firewall stateful rule group of IP-set variables
and Suricata rules, for the `aws` target: where a deny list of any size fits.

Place in the data flow: `Ruleset` → `view.views` → `address_rule_group` → one CreateRuleGroup
request in `aws-network-firewall-rule-groups.json` (and `terraform_aws` writes the same).

A network ACL holds 20 entries per direction (40 on request), so a threat list of thousands of
networks cannot be denied there; a Network Firewall IP set can hold it. Each deny rule becomes
one IP-set variable per family (`OG_DENY_<n>_V4`, `_V6`) and one Suricata rule per protocol
(`drop`, or `alert` in audit mode, as outguard only logs there). The Suricata text is written
here because no library writes it; only the few forms below are produced, each one checked by
the validation tier.
"""

from __future__ import annotations

from typing import Any

from outguard.export.view import Ledger, RuleView, views
from outguard.ruleset.ir import Ruleset

GROUP_NAME = "outguard-deny-addresses"
SID_BASE = 1_000_000  # Suricata's range for local rules starts at 1,000,000


def _ports(view: RuleView) -> str:
    if not view.ports:
        return "any"
    parts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in view.ports]
    return parts[0] if len(parts) == 1 else "[" + ",".join(parts) + "]"


def _protocols(view: RuleView) -> list[str]:
    if view.proto == "icmp":
        return ["icmp"]
    if view.proto == "any":
        return ["tcp", "udp"] if view.ports else ["ip"]
    return [view.proto]


def suricata_rules(variables: list[tuple[str, RuleView]], action: str) -> list[str]:
    """One Suricata rule per (variable, protocol); sids in order, so the text is stable."""
    lines: list[str] = []
    for variable, view in variables:
        for proto in _protocols(view):
            ports = "any" if proto in ("ip", "icmp") else _ports(view)
            sid = SID_BASE + len(lines) + 1
            lines.append(f'{action} {proto} $HOME_NET any -> ${variable} {ports}'
                         f' (msg:"outguard {view.key}"; sid:{sid}; rev:1;)')
    return lines


def address_rule_group(ruleset: Ruleset, ledger: Ledger) -> dict[str, Any] | None:
    """The CreateRuleGroup request, or None when no deny rule has addresses."""
    ip_sets: dict[str, dict[str, list[str]]] = {}
    variables: list[tuple[str, RuleView]] = []
    for index, view in enumerate(views(ruleset), start=1):
        if not view.deny or not view.has_addresses or ledger.level(view.key) == "dropped":
            continue
        for version in (4, 6):
            cidrs = view.cidrs(version)
            if cidrs:
                name = f"OG_DENY_{index}_V{version}"
                ip_sets[name] = {"Definition": sorted(cidrs)}
                variables.append((name, view))
        ledger.note(view.key, ledger.level(view.key),
                    "its addresses also in the Network Firewall IP-set rule group"
                    f" {GROUP_NAME} (any number of them; traffic routed through the firewall)")
    if not variables:
        return None
    action = "alert" if ruleset.mode == "audit" else "drop"
    rules = suricata_rules(variables, action)
    return {"RuleGroupName": GROUP_NAME, "Type": "STATEFUL", "Capacity": max(10, 2 * len(rules)),
            "Description": f"outguard policy {ruleset.policy_digest[:12]}",
            "RuleGroup": {
                "RuleVariables": {"IPSets": ip_sets},
                "RulesSource": {"RulesString": "\n".join(rules) + "\n"}}}
