"""AWS Network Firewall stateful domain-list rule groups for the `aws` target: the policy's host
names and wildcards (those of `@list` entries too) as TLS SNI / HTTP Host lists.

Place in the data flow: `Ruleset` → `view.views` → `domain_rule_groups` → one JSON file of
CreateRuleGroup requests (and `terraform_aws` reads the same requests).

Enforce mode: the deny rules' names go to a DENYLIST group, the allow rules' names to an
ALLOWLIST group (which also drops HTTP and TLS to every name not on it). Audit mode blocks
nothing: the deny rules' names go to an ALERTLIST (a log line per match, as outguard logs what
it would block) and no ALLOWLIST is written, since it would block.
"""

from __future__ import annotations

from typing import Any

from outguard.export.view import Ledger, views
from outguard.ruleset.ir import Ruleset


def domain_target(name: str) -> str:
    """Network Firewall's form: `.example.test` matches the domain and every name below it."""
    return "." + name[2:] if name.startswith("*.") else name


def domain_rule_groups(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    """CreateRuleGroup requests: a deny (or, in audit mode, alert) list and an allow list."""
    audit = ruleset.mode == "audit"
    lists: dict[str, dict[str, None]] = {"DENYLIST": {}, "ALLOWLIST": {}, "ALERTLIST": {}}
    for view in views(ruleset):
        if not view.fqdns or (view.owner() is not None and not view.deny):
            continue
        if audit and not view.deny:
            continue  # everything is allowed already; an allowlist would block the rest
        kind = "ALERTLIST" if audit else "DENYLIST" if view.deny else "ALLOWLIST"
        for name in view.fqdns:
            lists[kind][domain_target(name)] = None
        if audit:
            ledger.note(view.key, ledger.level(view.key),
                        "its names only alert (Network Firewall ALERTLIST): audit mode")
            continue
        ledger.approx(view.key, "names in a Network Firewall domain "
                      + ("deny" if view.deny else "allow") + " list: matched by TLS SNI and HTTP"
                      " Host only, on any port" + (", and .domain also matches the domain itself"
                                                  if view.wildcards else ""))
    out = []
    for kind, targets in lists.items():
        if targets:
            out.append({"RuleGroupName": f"outguard-{kind.lower()}", "Type": "STATEFUL",
                        "Capacity": max(10, 2 * len(targets)),
                        "Description": f"outguard policy {ruleset.policy_digest[:12]}",
                        "RuleGroup": {"RulesSource": {"RulesSourceList": {
                            "Targets": list(targets), "TargetTypes": ["TLS_SNI", "HTTP_HOST"],
                            "GeneratedRulesType": kind}}}})
    if lists["ALLOWLIST"]:
        for view in views(ruleset):
            if not view.deny and view.has_addresses and view.proto in ("tcp", "any") \
                    and ledger.level(view.key) != "dropped":
                ledger.approx(view.key, "Network Firewall's ALLOWLIST drops HTTP and TLS whose"
                              " SNI or Host is not on it, to this rule's addresses too")
        ledger.warn("Network Firewall only sees traffic routed through its endpoint; its"
                    " ALLOWLIST rule group also drops HTTP and TLS to names not on it, even to"
                    " allowed addresses")
    return out
