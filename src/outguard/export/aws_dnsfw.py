"""Route 53 Resolver DNS Firewall for the `aws` target: what outguard's own resolver does for a
policy with `dns:`, done by the VPC's resolver.

Place in the data flow: `Ruleset` (with `dns:`) → `view.views` → `dns_firewall` → one JSON file
of Route 53 Resolver requests (and `terraform_aws` reads the same requests).

outguard's resolver answers a name of a deny rule with a refusal, a name of an allow rule with
its addresses, and every other name with a refusal (`dns.unlisted`), unless an allow rule has
no `to` (then every name resolves). The rule group does the same, in that order: the deny
names BLOCK (priority 100), the allow names ALLOW (200), and `*` BLOCK (300). Wildcards keep
their meaning (`*.example.test`: every name below, not the domain itself). Audit mode: ALERT
instead of BLOCK. The request ids that are not known before the lists exist
(`FirewallDomainListId`, `FirewallRuleGroupId`) hold the names given to them here.
"""

from __future__ import annotations

from typing import Any

from outguard.export.view import Ledger, views
from outguard.ruleset.ir import Ruleset

GROUP = "outguard"
LISTS = {"deny": "outguard-deny", "allow": "outguard-allow", "all": "outguard-unlisted"}
MAX_DOMAINS = 100_000  # per domain list (Route 53 Resolver quota, adjustable)


def dns_firewall(ruleset: Ruleset, ledger: Ledger) -> dict[str, Any] | None:
    """The requests, in the order to make them, or None without `dns:`."""
    if ruleset.dns is None:
        return None
    audit = ruleset.mode == "audit"
    domains: dict[str, dict[str, None]] = {"deny": {}, "allow": {}}
    every_name = False
    for view in views(ruleset):
        if view.owner() is not None and not view.deny:
            continue
        if view.any_destination and not view.deny:
            every_name = True
        domains["deny" if view.deny else "allow"].update(dict.fromkeys(view.fqdns))
    block = {"Action": "ALERT"} if audit else {"Action": "BLOCK", "BlockResponse": "NXDOMAIN"}
    rules: list[dict[str, Any]] = []
    if domains["deny"]:
        rules.append({"Name": "outguard-deny", "Priority": 100, **block,
                      "FirewallDomainListId": LISTS["deny"]})
    if domains["allow"]:
        rules.append({"Name": "outguard-allow", "Priority": 200, "Action": "ALLOW",
                      "FirewallDomainListId": LISTS["allow"]})
    if not every_name:
        domains["all"] = {"*": None}
        rules.append({"Name": "outguard-unlisted", "Priority": 300, **block,
                      "FirewallDomainListId": LISTS["all"]})
    for key, names in domains.items():
        if len(names) > MAX_DOMAINS:
            ledger.warn(f"{len(names)} names in {LISTS[key]} exceed the DNS Firewall quota of"
                        f" {MAX_DOMAINS} per domain list: ask for more")
    ledger.note("dns", "approximated", "the VPC's Route 53 Resolver DNS Firewall stands in for"
                " outguard's resolver (aws-dns-firewall.json): it answers blocked names NXDOMAIN"
                " and cannot put answers into the security group, whose addresses are those of"
                " export time; a client that asks another DNS server bypasses it")
    return {
        "CreateFirewallDomainList": [{"Name": LISTS[k], "CreatorRequestId": LISTS[k]}
                                     for k in domains if domains[k]],
        "UpdateFirewallDomains": [{"FirewallDomainListId": LISTS[k], "Operation": "REPLACE",
                                   "Domains": list(v)} for k, v in domains.items() if v],
        "CreateFirewallRuleGroup": {"Name": GROUP, "CreatorRequestId": GROUP},
        "CreateFirewallRule": [{"FirewallRuleGroupId": GROUP, "CreatorRequestId": r["Name"], **r}
                               for r in rules],
        "AssociateFirewallRuleGroup": {"FirewallRuleGroupId": GROUP, "VpcId": "VPC_ID",
                                       "Priority": 101, "Name": GROUP,
                                       "CreatorRequestId": GROUP + "-assoc"},
    }
