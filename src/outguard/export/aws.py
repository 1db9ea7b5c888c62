"""The `aws` export target: security-group egress permissions, network-ACL deny entries and
AWS Network Firewall domain-list rule groups, as JSON for the EC2 and Network Firewall APIs.

Place in the data flow: `Ruleset` → `view.views` → three JSON files; `aws_apply` reconciles a
live security group to the first of them through boto3.

A security group only allows (its default is deny, and it is stateful), so allow rules and the
default map exactly. It cannot deny: deny rules go to network-ACL entries numbered before a
final allow-all, because a packet must pass both the ACL and the group — deny beats allow,
as in outguard, but for the whole subnet. Neither can hold host names: their export-time
addresses are used, and the names also go to Network Firewall domain lists (TLS SNI / HTTP Host).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from outguard.export.fidelity import Export
from outguard.export.view import ALL_V4, ALL_V6, Ledger, RuleView, common_notes, default_note, views
from outguard.ruleset.ir import Ruleset

SG_RULES_PER_FAMILY = 60  # default quota: egress rules per security group, IPv4 and IPv6 each
NACL_RULES = 20  # default quota: rules per network ACL and direction
NACL_FIRST, NACL_STEP = 100, 10
NACL_ALLOW_V4, NACL_ALLOW_V6 = 32765, 32766  # after every deny entry, before the implicit deny
_DESC_BAD = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")  # EC2's allowed characters


def description(text: str) -> str:
    return _DESC_BAD.sub("_", text)[:255]


@dataclass(frozen=True, order=True)
class Atom:
    """One security-group rule as AWS counts it: protocol, port range, one CIDR."""

    proto: str  # tcp | udp | icmp | icmpv6 | -1
    from_port: int
    to_port: int
    cidr: str

    @property
    def v6(self) -> bool:
        return ":" in self.cidr


def _l4(view: RuleView, version: int) -> list[tuple[str, int, int]]:
    """(protocol, from, to) of a rule for one family, in EC2's terms."""
    if view.proto == "icmp":
        return [("icmp" if version == 4 else "icmpv6", -1, -1)]
    protos = ["tcp", "udp"] if view.proto == "any" else [view.proto]
    if view.proto == "any" and not view.ports:
        return [("-1", -1, -1)]
    ranges = view.ports or ((0, 65535),)
    return [(p, lo, hi) for p in protos for lo, hi in ranges]


def atoms(view: RuleView) -> list[Atom]:
    out: list[Atom] = []
    for version in (4, 6):
        for cidr in view.cidrs(version):
            out.extend(Atom(p, lo, hi, cidr) for p, lo, hi in _l4(view, version))
    return out


def permissions(desired: dict[Atom, str]) -> list[dict[str, Any]]:
    """Atoms grouped into EC2 IpPermissions, as authorize_security_group_egress takes them."""
    grouped: dict[tuple[str, int, int], dict[str, Any]] = {}
    for atom, desc in sorted(desired.items()):
        perm = grouped.setdefault((atom.proto, atom.from_port, atom.to_port), _perm_head(atom))
        if atom.v6:
            perm.setdefault("Ipv6Ranges", []).append({"CidrIpv6": atom.cidr, "Description": desc})
        else:
            perm.setdefault("IpRanges", []).append({"CidrIp": atom.cidr, "Description": desc})
    return list(grouped.values())


def _perm_head(atom: Atom) -> dict[str, Any]:
    head: dict[str, Any] = {"IpProtocol": atom.proto}
    if atom.proto != "-1":
        head |= {"FromPort": atom.from_port, "ToPort": atom.to_port}
    return head


def desired_atoms(ruleset: Ruleset, ledger: Ledger) -> dict[Atom, str]:
    """The security group's egress rules (atom → description) and the fidelity of allow rules."""
    out: dict[Atom, str] = {}
    for view in views(ruleset):
        if view.deny or not common_notes(view, ledger, "a security group", mode=ruleset.mode):
            continue
        if view.wildcards:
            ledger.approx(view.key, "wildcards only in the Network Firewall allowlist: the security"
                                    " group must also allow their traffic, and outguard does not"
                                    " open it to every address")
            if not view.has_addresses:
                ledger.drop(view.key, "the security group cannot hold wildcard names")
                continue
        for atom in atoms(view):
            out.setdefault(atom, description(f"outguard {view.key}"))
    if ruleset.mode == "audit":
        for cidr in (ALL_V4, ALL_V6):
            out.setdefault(Atom("-1", -1, -1, cidr), "outguard audit mode: allow all")
    for v6, family in ((False, "IPv4"), (True, "IPv6")):
        count = sum(1 for a in out if a.v6 == v6)
        if count > SG_RULES_PER_FAMILY:
            ledger.warn(f"{count} {family} egress rules exceed the default quota of"
                        f" {SG_RULES_PER_FAMILY} per security group: ask for a higher quota"
                        " (at most 1000 rules per network interface) or split the group")
    return out


def nacl_entries(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    """Network-ACL egress entries (CreateNetworkAclEntry arguments) for the deny rules."""
    entries: list[dict[str, Any]] = []
    for view in views(ruleset):
        if not view.deny or not common_notes(view, ledger, "a network ACL", mode=ruleset.mode):
            continue
        if view.has_addresses:
            ledger.approx(view.key, "network ACL entry: applies to the whole subnet, and the"
                                    " security group cannot deny")
        for atom in atoms(view):
            entries.append(_nacl_entry(atom, NACL_FIRST + NACL_STEP * len(entries)))
    if len(entries) > NACL_RULES:
        ledger.warn(f"{len(entries)} network-ACL deny entries exceed the default quota of"
                    f" {NACL_RULES} per direction (40 at most on request)")
    if entries:
        for number, cidr in ((NACL_ALLOW_V4, ALL_V4), (NACL_ALLOW_V6, ALL_V6)):
            entries.append(_nacl_entry(Atom("-1", -1, -1, cidr), number, "allow"))
    return entries


_NACL_PROTO = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "-1": "-1"}


def _nacl_entry(atom: Atom, number: int, action: str = "deny") -> dict[str, Any]:
    entry: dict[str, Any] = {"RuleNumber": number, "Protocol": _NACL_PROTO[atom.proto],
                             "RuleAction": action, "Egress": True}
    entry["Ipv6CidrBlock" if atom.v6 else "CidrBlock"] = atom.cidr
    if atom.proto in ("tcp", "udp"):
        entry["PortRange"] = {"From": atom.from_port, "To": atom.to_port}
    elif atom.proto in ("icmp", "icmpv6"):
        entry["IcmpTypeCode"] = {"Type": -1, "Code": -1}
    return entry


def domain_rule_groups(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    """Network Firewall CreateRuleGroup requests: one deny list, one allow list."""
    lists: dict[str, dict[str, None]] = {"DENYLIST": {}, "ALLOWLIST": {}}
    for view in views(ruleset):
        left_out = (view.owner() is not None and not view.deny) or (
            ruleset.mode == "audit" and view.deny)
        if not view.fqdns or left_out:
            continue
        kind = "DENYLIST" if view.deny else "ALLOWLIST"
        for name in view.fqdns:
            lists[kind]["." + name[2:] if name.startswith("*.") else name] = None
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
    if out:
        ledger.warn("Network Firewall only sees traffic routed through its endpoint; an ALLOWLIST"
                    " rule group also drops HTTP and TLS to names not on it, even to allowed"
                    " addresses")
    return out


def export_aws(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    desired = desired_atoms(ruleset, ledger)
    entries = nacl_entries(ruleset, ledger)
    groups = domain_rule_groups(ruleset, ledger)
    default_note(ruleset, ledger, "a security group", logs="VPC Flow Logs")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    files = {
        "aws-security-group-egress.json": _json({"IpPermissions": permissions(desired)}),
        "aws-network-acl-egress.json": _json({"Entries": entries}),
        "aws-network-firewall-rule-groups.json": _json({"RuleGroups": groups}),
    }
    return Export("aws", files, fidelity, ledger.warnings)


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"
