"""`outguard apply --backend aws`: reconcile a live security group's egress rules to a policy.

Place in the data flow: `Ruleset` → `aws.desired_atoms` (what the group should hold) and
`describe_security_group_rules` (what it holds) → `plan` (pure) → at most one authorize and one
revoke call through boto3. A second run with the same policy finds nothing to change and makes
no write call. New rules are authorized before old ones are revoked, so traffic the old and the
new policy both allow never sees a gap. Only the egress side of the group is touched: an egress
CIDR rule the policy does not have (the default allow-all included) is revoked. Egress rules
the policy cannot express (to another security group or a prefix list) are kept and reported
as allowing more than the policy (`--revoke-foreign` revokes them too): revoking them silently
could cut a database or a VPC endpoint the operator added on purpose.

The network-ACL and Network Firewall files of `aws` are exported, not applied here: they belong
to the subnet and the VPC, which are shared with other machines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from outguard.errors import OutguardError
from outguard.export.aws import desired_atoms, permissions
from outguard.export.aws_atoms import Atom
from outguard.export.view import Ledger
from outguard.ruleset.ir import Ruleset


class AwsError(OutguardError):
    """The EC2 API refused a call, or the security group is not there."""


@dataclass
class Plan:
    authorize: dict[Atom, str] = field(default_factory=dict)  # atom → description
    revoke: dict[Atom, str] = field(default_factory=dict)  # atom → security group rule id
    other: list[str] = field(default_factory=list)  # egress rules outguard can't express: revoked
    kept: dict[str, str] = field(default_factory=dict)  # … or kept: rule id → what it allows

    @property
    def empty(self) -> bool:
        return not (self.authorize or self.revoke or self.other)

    def summary(self) -> str:
        return (f"{len(self.authorize)} egress rules to authorize,"
                f" {len(self.revoke) + len(self.other)} to revoke")


def _foreign(rule: dict[str, Any]) -> str:
    """What an egress rule outguard cannot express allows, for the report."""
    ref = rule.get("ReferencedGroupInfo") or {}
    target = (f"security group {ref['GroupId']}" if ref.get("GroupId")
              else f"prefix list {rule['PrefixListId']}" if rule.get("PrefixListId") else "?")
    proto = str(rule.get("IpProtocol"))
    ports = "" if proto == "-1" else f" {rule.get('FromPort')}-{rule.get('ToPort')}"
    return f"{'all' if proto == '-1' else proto}{ports} to {target}"


def _atom_of(rule: dict[str, Any]) -> Atom | None:
    """The atom of one SecurityGroupRule, or None for rules to other groups or prefix lists."""
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    if cidr is None:
        return None
    proto = str(rule["IpProtocol"])
    proto = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}.get(proto, proto)
    if proto == "-1":
        return Atom("-1", -1, -1, cidr)
    return Atom(proto, int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1)), cidr)


def plan(current: Iterable[dict[str, Any]], desired: dict[Atom, str], *,
         revoke_foreign: bool = False) -> Plan:
    """What to change so that the group's CIDR egress rules are exactly `desired`; rules to
    other groups or prefix lists are kept unless `revoke_foreign`. Pure."""
    out = Plan()
    held: set[Atom] = set()
    for rule in current:
        if not rule.get("IsEgress"):
            continue
        atom = _atom_of(rule)
        if atom is None and revoke_foreign:
            out.other.append(str(rule["SecurityGroupRuleId"]))
        elif atom is None:
            out.kept[str(rule["SecurityGroupRuleId"])] = _foreign(rule)
        elif atom in desired and atom not in held:
            held.add(atom)
        else:
            out.revoke[atom] = str(rule["SecurityGroupRuleId"])
    out.authorize = {a: d for a, d in desired.items() if a not in held}
    return out


def current_rules(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": [group_id]}])
    return [rule for page in pages for rule in page["SecurityGroupRules"]]


@dataclass
class Result:
    plan: Plan
    ledger: Ledger


def reconcile(ec2: Any, group_id: str, ruleset: Ruleset, *, dry_run: bool = False,
              revoke_foreign: bool = False) -> Result:
    """Make the group's egress rules match the policy; `ec2` is a boto3 EC2 client."""
    # boto3 comes with the `dev` extra, not the core, and ships no type hints
    import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

    ledger = Ledger()
    desired = desired_atoms(ruleset, ledger)
    try:
        todo = plan(current_rules(ec2, group_id), desired, revoke_foreign=revoke_foreign)
        for rule_id, what in todo.kept.items():
            ledger.approx("default", f"{group_id} keeps egress rule {rule_id} ({what}): outguard"
                                     " cannot express it, so it allows more than the policy"
                                     " (--revoke-foreign revokes it)")
        if dry_run or todo.empty:
            return Result(todo, ledger)
        if todo.authorize:
            ec2.authorize_security_group_egress(GroupId=group_id,
                                                IpPermissions=permissions(todo.authorize))
        gone = list(todo.revoke.values()) + todo.other
        if gone:
            ec2.revoke_security_group_egress(GroupId=group_id, SecurityGroupRuleIds=gone)
    except botocore.exceptions.ClientError as exc:
        raise AwsError(f"security group {group_id}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise AwsError(f"AWS: {exc}") from exc
    return Result(todo, ledger)


def client(region: str | None, endpoint_url: str | None) -> Any:
    """A boto3 EC2 client from the usual credential chain (env, profile, instance role)."""
    try:
        import boto3  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
    except ImportError as exc:
        raise AwsError("the aws backend needs boto3: pip install boto3") from exc
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)
