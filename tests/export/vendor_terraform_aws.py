"""The hashicorp/aws resources outguard's `outguard-aws.tf.json` writes, as far as it writes
them: a hand-written subset for the validation tier (tests/export/test_terraform.py), not the
provider's schema file.

Follows the hashicorp/aws provider 5.x resource documentation (registry.terraform.io; in
hashicorp/terraform-provider-aws website/docs/r/: security_group, vpc_security_group_egress_rule,
network_acl_rule, networkfirewall_rule_group, route53_resolver_firewall_domain_list,
route53_resolver_firewall_rule_group, route53_resolver_firewall_rule,
route53_resolver_firewall_rule_group_association) for argument names, types, required
arguments and nested blocks, and the AWS API constraints the provider passes on or validates
with the API's own enums (EC2, Network Firewall and Route 53 Resolver API references): rule
numbers 1-32766, the description character set, ALLOWLIST/DENYLIST/REJECTLIST/ALERTLIST, DNS
Firewall actions and block responses, association priorities 100-9900, name patterns.

Stricter than the provider where that catches a mistake of the exporter: only the arguments
outguard writes; one destination per rule (IPv4 or IPv6 CIDR, of that family, without host
bits); ports exactly when the protocol has them, in order; a BLOCK rule says how it blocks;
a Network Firewall domain list holds no more targets than its capacity.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tests.export.vendor_terraform import CIDR, CIDR4, CIDR6, Resource, TfBlock, blocks, known

DESCRIPTION = Annotated[str, Field(max_length=255, pattern=r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$")]
IpProtocol = Literal["-1", "tcp", "udp", "icmp", "icmpv6"]
NaclProtocol = Literal["-1", "6", "17", "1", "58"]  # outguard writes numbers, as the API returns
SgPort = Annotated[int, Field(ge=-1, le=65535)]
R53_NAME = Annotated[str, Field(max_length=64, pattern=r"^(?!^[0-9]+$)[a-zA-Z0-9\-_ ]+$")]


class SecurityGroup(Resource):
    name: Annotated[str, Field(max_length=255, pattern=r"^(?!sg-)")] | None = None
    description: DESCRIPTION | None = None
    vpc_id: str | None = None


class SecurityGroupEgressRule(Resource):
    security_group_id: str
    ip_protocol: IpProtocol
    description: DESCRIPTION | None = None
    cidr_ipv4: CIDR4 | None = None
    cidr_ipv6: CIDR6 | None = None
    from_port: SgPort | None = None
    to_port: SgPort | None = None

    @model_validator(mode="after")
    def _rule(self) -> SecurityGroupEgressRule:
        if (self.cidr_ipv4 is None) == (self.cidr_ipv6 is None):
            raise ValueError("exactly one of cidr_ipv4 and cidr_ipv6")
        ports = (self.from_port, self.to_port)
        if not known(self.ip_protocol, *ports):
            return self
        if self.ip_protocol == "-1" and ports != (None, None):
            raise ValueError("ip_protocol -1 takes no from_port/to_port")
        if self.ip_protocol in ("tcp", "udp") and not (
                ports[0] is not None and ports[1] is not None and 0 <= ports[0] <= ports[1]):
            raise ValueError("tcp and udp need 0 <= from_port <= to_port")
        return self


class NetworkAclRule(Resource):
    network_acl_id: str
    rule_number: Annotated[int, Field(ge=1, le=32766)]
    egress: bool = False
    protocol: NaclProtocol
    rule_action: Literal["allow", "deny"]
    cidr_block: CIDR4 | None = None
    ipv6_cidr_block: CIDR6 | None = None
    from_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    to_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    icmp_type: Annotated[int, Field(ge=-1, le=255)] | None = None
    icmp_code: Annotated[int, Field(ge=-1, le=255)] | None = None

    @model_validator(mode="after")
    def _entry(self) -> NetworkAclRule:
        if (self.cidr_block is None) == (self.ipv6_cidr_block is None):
            raise ValueError("exactly one of cidr_block and ipv6_cidr_block")
        ports = (self.from_port, self.to_port)
        icmp = (self.icmp_type, self.icmp_code)
        if not known(self.protocol, *ports, *icmp):
            return self
        if (self.protocol in ("6", "17")) != (None not in ports):
            raise ValueError("from_port and to_port exactly for protocols 6 and 17")
        if None not in ports and ports[0] > ports[1]:  # type: ignore[operator]
            raise ValueError("from_port above to_port")
        if (self.protocol in ("1", "58")) != (None not in icmp):
            raise ValueError("icmp_type and icmp_code exactly for protocols 1 and 58")
        return self


class RulesSourceList(TfBlock):
    generated_rules_type: Literal["ALLOWLIST", "DENYLIST", "REJECTLIST", "ALERTLIST"]
    target_types: Annotated[list[Literal["TLS_SNI", "HTTP_HOST"]], Field(min_length=1)]
    # a leading dot: the domain and every name below it
    targets: Annotated[list[Annotated[str, Field(pattern=r"^\.?([A-Za-z0-9_-]+\.)+[A-Za-z0-9_-]+$")]],
                       Field(min_length=1)]


# The few Suricata forms outguard writes: `drop|alert <proto> $HOME_NET any -> $VAR <ports>
# (msg:"..."; sid:N; rev:1;)`; the variable must be one of the group's IP sets.
SURICATA_RULE = (r'^(drop|alert|pass|reject) (ip|tcp|udp|icmp) \$HOME_NET any -> \$([A-Z0-9_]+)'
                 r' (any|\d+(:\d+)?|\[\d+(:\d+)?(,\d+(:\d+)?)*\])'
                 r' \(msg:"[^";]*"; sid:(\d+); rev:\d+;\)$')


class RulesSource(TfBlock):
    rules_source_list: blocks(RulesSourceList, 0, 1) = Field(default_factory=list)  # type: ignore[valid-type]
    rules_string: Annotated[str, Field(min_length=1, max_length=2_000_000)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RulesSource:
        if (len(self.rules_source_list) == 1) == (self.rules_string is not None):
            raise ValueError("exactly one of rules_source_list and rules_string")
        return self


class IpSet(TfBlock):
    definition: Annotated[list[CIDR], Field(min_length=1)]


class IpSetVariable(TfBlock):
    key: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=32)]
    ip_set: blocks(IpSet, 1, 1)  # type: ignore[valid-type]


class RuleVariables(TfBlock):
    ip_sets: blocks(IpSetVariable, 1)  # type: ignore[valid-type]


class RuleGroupBlock(TfBlock):
    rules_source: blocks(RulesSource, 1, 1)  # type: ignore[valid-type]
    rule_variables: blocks(RuleVariables, 0, 1) = Field(default_factory=list)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _variables(self) -> RuleGroupBlock:
        names = {v.key for r in self.rule_variables for v in r.ip_sets}
        sids: set[int] = set()
        for source in self.rules_source:
            for line in (source.rules_string or "").splitlines():
                found = re.match(SURICATA_RULE, line)
                if found is None:
                    raise ValueError(f"not a rule outguard writes: {line!r}")
                if found.group(3) not in names:
                    raise ValueError(f"${found.group(3)} is no IP set of the group")
                sid = int(found.group(9))
                if sid in sids:
                    raise ValueError(f"sid {sid} twice")
                sids.add(sid)
        return self


class NetworkFirewallRuleGroup(Resource):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9-]+$")]
    type: Literal["STATEFUL", "STATELESS"]
    capacity: Annotated[int, Field(ge=1)]
    description: Annotated[str, Field(max_length=512)] | None = None
    rule_group: blocks(RuleGroupBlock, 1, 1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _capacity(self) -> NetworkFirewallRuleGroup:
        if not known(self.rule_group, self.capacity):
            return self
        targets = sum(len(s.targets) for g in self.rule_group for r in g.rules_source
                      for s in r.rules_source_list)
        rules = sum(len((r.rules_string or "").splitlines()) for g in self.rule_group
                    for r in g.rules_source)
        if max(targets, rules) > self.capacity:
            raise ValueError(f"{max(targets, rules)} targets or rules in a rule group of"
                             f" capacity {self.capacity}")
        return self


class FirewallDomainList(Resource):
    name: R53_NAME
    # an optional leading *, then letters, digits, hyphens and dots (the API's domain rule)
    domains: list[Annotated[str, Field(min_length=1, max_length=255,
                                       pattern=r"^\*?[A-Za-z0-9.-]*$")]] | None = None


class FirewallRuleGroup(Resource):
    name: R53_NAME


class FirewallRule(Resource):
    name: R53_NAME
    action: Literal["ALLOW", "BLOCK", "ALERT"]
    priority: Annotated[int, Field(ge=0)]
    firewall_rule_group_id: str
    firewall_domain_list_id: str
    block_response: Literal["NODATA", "NXDOMAIN", "OVERRIDE"] | None = None

    @model_validator(mode="after")
    def _block(self) -> FirewallRule:
        if known(self.action) and (self.action == "BLOCK") != (self.block_response is not None):
            raise ValueError("block_response exactly for BLOCK rules")
        return self


class FirewallRuleGroupAssociation(Resource):
    name: R53_NAME
    priority: Annotated[int, Field(ge=100, le=9900)]
    firewall_rule_group_id: str
    vpc_id: str


RESOURCES: dict[str, type[Resource]] = {
    "aws_security_group": SecurityGroup,
    "aws_vpc_security_group_egress_rule": SecurityGroupEgressRule,
    "aws_network_acl_rule": NetworkAclRule,
    "aws_networkfirewall_rule_group": NetworkFirewallRuleGroup,
    "aws_route53_resolver_firewall_domain_list": FirewallDomainList,
    "aws_route53_resolver_firewall_rule_group": FirewallRuleGroup,
    "aws_route53_resolver_firewall_rule": FirewallRule,
    "aws_route53_resolver_firewall_rule_group_association": FirewallRuleGroupAssociation,
}
