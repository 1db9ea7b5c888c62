"""The `aws` export target: security-group egress permissions, network-ACL deny entries, AWS
Network Firewall domain-list rule groups and, with `dns:`, Route 53 Resolver DNS Firewall, as
JSON requests for the EC2, Network Firewall and Route 53 Resolver APIs. The deny rules'
addresses also go to a Network Firewall IP-set rule group (`aws_nfw_ipsets`), which holds lists
of any size where a network ACL holds 20 entries.

Place in the data flow: `Ruleset` → `view.views` → JSON files (`aws_nfw`, `aws_dnsfw` write
theirs); `aws_apply` reconciles a live security group to the first of them through boto3, and
`terraform_aws` writes the same as Terraform.

A security group only allows (its default is deny, and it is stateful), so allow rules and the
default map exactly, within the group's quota. A new group allows all egress: the export
revokes that (`aws-security-group-revoke-default.json`). The group cannot deny: deny rules go
to network-ACL entries numbered 1, 2, … — before rule 100, which the VPC's default network ACL
already holds as its allow-all — then a final allow-all for a new ACL. A packet must pass both
the ACL and the group, so deny beats allow, as in outguard, but for the whole subnet, and
statelessly (see `STATELESS`). Neither can hold host names: their export-time addresses are
used, and the names also go to Network Firewall domain lists (TLS SNI / HTTP Host).
"""

from __future__ import annotations

import json
import re
from typing import Any

from outguard.export.aws_atoms import Atom
from outguard.export.aws_dnsfw import dns_firewall
from outguard.export.aws_nfw import domain_rule_groups
from outguard.export.aws_nfw_ipsets import address_rule_group
from outguard.export.fidelity import Export
from outguard.export.terraform_aws import terraform_aws
from outguard.export.view import ALL_V4, ALL_V6, Ledger, RuleView, common_notes, default_note, views
from outguard.ruleset.ir import Ruleset

SG_RULES_PER_FAMILY = 60  # default quota: egress rules per security group, IPv4 and IPv6 each
SG_RULES_MAX = 1000  # the most a quota increase gives (rules per network interface)
# default quota: 20 entries per network ACL and direction, its two `*` deny entries included
# (40 at most on request); ours ends with two allow-all entries
NACL_RULES, NACL_RULES_MAX, NACL_FIXED = 20, 40, 4
NACL_FIRST = 1  # the default network ACL holds 100 (allow all IPv4) and 101 (IPv6)
NACL_ALLOW_V4, NACL_ALLOW_V6 = 32765, 32766  # after every deny entry, before the implicit deny
STATELESS = ("network ACLs are stateless: the entry also drops this subnet's replies to"
             " connections that come in from these destinations (outguard lets replies out)")
_DESC_BAD = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")  # EC2's allowed characters


def description(text: str) -> str:
    return _DESC_BAD.sub("_", text)[:255]


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
    owner: dict[Atom, str] = {}
    for view in views(ruleset):
        if view.deny or not common_notes(view, ledger, "a security group", mode=ruleset.mode):
            continue
        if view.wildcards:
            ledger.note(view.key, "approximated" if view.has_addresses else "dropped",
                        "wildcards only in the Network Firewall allowlist: the security group"
                        " cannot hold them, and outguard does not open it to every address")
        for atom in atoms(view):
            out.setdefault(atom, description(f"outguard {view.key}"))
            owner.setdefault(atom, view.key)
    if ruleset.mode == "audit":
        for cidr in (ALL_V4, ALL_V6):
            out.setdefault(Atom("-1", -1, -1, cidr), "outguard audit mode: allow all")
    for v6, family in ((False, "IPv4"), (True, "IPv6")):
        mine = [a for a in out if a.v6 == v6]
        if len(mine) <= SG_RULES_PER_FAMILY:
            continue
        need = f"{len(mine)} {family} egress rules"
        for atom in mine[SG_RULES_PER_FAMILY:]:
            if atom in owner:
                ledger.approx(owner[atom], f"past the default quota of {SG_RULES_PER_FAMILY}"
                              f" {family} rules per security group ({need}): AWS refuses the"
                              " group's rules until the quota is raised"
                              + (f" (at most {SG_RULES_MAX})" if len(mine) > SG_RULES_MAX else ""))
        ledger.warn(f"{need} exceed the default quota of {SG_RULES_PER_FAMILY} per security group:"
                    f" ask for a higher quota (at most {SG_RULES_MAX} rules per network interface)"
                    " or split the group")
    return out


def nacl_entries(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    """Network-ACL egress entries (CreateNetworkAclEntry arguments) for the deny rules."""
    entries: list[dict[str, Any]] = []
    room = NACL_RULES - NACL_FIXED
    for view in views(ruleset):
        if not view.deny or not common_notes(view, ledger, "a network ACL", mode=ruleset.mode):
            continue
        if view.has_addresses:
            ledger.approx(view.key, "network ACL entry: applies to the whole subnet, and the"
                                    " security group cannot deny")
            ledger.approx(view.key, STATELESS)
        for atom in atoms(view):
            number = NACL_FIRST + len(entries)
            if len(entries) >= room:
                ledger.approx(view.key, f"entry {number} is past the default quota of"
                              f" {NACL_RULES} entries per network ACL and direction (the two"
                              " `*` entries and the two allow-all entries count): AWS refuses it"
                              f" until the quota is raised (at most {NACL_RULES_MAX})")
            entries.append(_nacl_entry(atom, number))
    if len(entries) > room:
        ledger.warn(f"{len(entries)} network-ACL deny entries exceed the {room} the default quota"
                    f" leaves ({NACL_RULES} per direction; at most {NACL_RULES_MAX} on request)")
    if len(entries) > NACL_RULES_MAX - NACL_FIXED or NACL_FIRST + len(entries) > 100:
        ledger.warn("more deny entries than any network ACL holds before rule 100")
    if entries:
        for number, cidr in ((NACL_ALLOW_V4, ALL_V4), (NACL_ALLOW_V6, ALL_V6)):
            entries.append(_nacl_entry(Atom("-1", -1, -1, cidr), number, "allow"))
        ledger.warn("the network-ACL entries are egress entries of the subnet's ACL: numbered"
                    f" from {NACL_FIRST}, before the default ACL's allow-all (rule 100); a new ACL"
                    " also needs ingress entries that let replies in")
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


def revoke_default(ruleset: Ruleset) -> dict[str, Any]:
    """RevokeSecurityGroupEgress arguments for the allow-all egress a new group starts with."""
    if ruleset.mode == "audit":
        return {"IpPermissions": []}
    return {"IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": ALL_V4}],
                               "Ipv6Ranges": [{"CidrIpv6": ALL_V6}]}]}


def export_aws(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    desired = desired_atoms(ruleset, ledger)
    entries = nacl_entries(ruleset, ledger)
    groups = domain_rule_groups(ruleset, ledger)
    addresses = address_rule_group(ruleset, ledger)
    if addresses is not None:
        groups.append(addresses)
    dnsfw = dns_firewall(ruleset, ledger)
    default_note(ruleset, ledger, "a security group", logs="VPC Flow Logs")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"dns": 1 << 29, "default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    files = {
        "aws-security-group-egress.json": _json({"IpPermissions": permissions(desired)}),
        "aws-security-group-revoke-default.json": _json(revoke_default(ruleset)),
        "aws-network-acl-egress.json": _json({"Entries": entries}),
        "aws-network-firewall-rule-groups.json": _json({"RuleGroups": groups}),
    }
    if dnsfw is not None:
        files["aws-dns-firewall.json"] = _json(dnsfw)
    files["outguard-aws.tf.json"] = terraform_aws(desired, entries, groups, dnsfw,
                                                  ruleset.policy_digest)
    warnings = ledger.warnings
    if ruleset.mode != "audit":
        warnings.append("a new security group allows all egress: revoke that rule"
                        " (aws-security-group-revoke-default.json; ::/0 exists only in a VPC"
                        " with IPv6) or let `outguard apply --backend aws` reconcile the group")
    return Export("aws", files, fidelity, warnings)


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"
