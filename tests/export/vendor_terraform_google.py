"""The hashicorp/google resources outguard's `outguard-gcp.tf.json` writes, as far as it writes
them: a hand-written subset for the validation tier (tests/export/test_terraform.py), not the
provider's schema file.

Follows the hashicorp/google provider 5.x resource documentation (registry.terraform.io; in
hashicorp/terraform-provider-google website/docs/r/: compute_network_firewall_policy,
compute_network_firewall_policy_rule, compute_network_firewall_policy_association,
network_security_address_group) for argument names, types, required arguments, nested blocks
and the values and limits it lists: rule priorities 0-2147483647, actions allow, deny,
goto_next, apply_security_profile_group, directions INGRESS and EGRESS, well-known protocols
(tcp, udp, icmp, esp, ah, ipip, sctp) or protocol numbers, ports only for port protocols, at
most 5,000 destination ranges, 100 destination FQDNs, 10 destination address groups and 256
target secure tags per rule; address groups of type IPV4 or IPV6. Compute resource names follow
RFC 1035 (1-63 characters, `[a-z]([-a-z0-9]*[a-z0-9])?`), and `all` is the firewall policies'
protocol for every protocol (Compute API firewallPolicies.rules).

Stricter than the provider where that catches a mistake of the exporter: only the arguments
outguard writes; a rule's destination ranges are of one address family and have no host bits;
FQDN objects are host names (GCP takes no wildcard there); rule names are RFC 1035 names; an
address group holds no more items than its capacity, all of its type's family.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tests.export.vendor_terraform import CIDR, PORT_RANGE, Resource, TfBlock, blocks, known

RFC1035 = Annotated[str, Field(max_length=63, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]
HOST = Annotated[str, Field(max_length=255,
                            pattern=r"^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+\.?$")]
PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp", "all")
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "6", "17", "132")


class Layer4Config(TfBlock):
    ip_protocol: str
    ports: list[PORT_RANGE] | None = None

    @model_validator(mode="after")
    def _protocol(self) -> Layer4Config:
        proto = self.ip_protocol
        if not known(proto, self.ports):
            return self
        if proto not in PROTOCOLS and not (proto.isdigit() and int(proto) <= 255):
            raise ValueError(f"ip_protocol {proto!r}: one of {', '.join(PROTOCOLS)} or 0-255")
        if self.ports and proto not in PORT_PROTOCOLS:
            raise ValueError(f"ports only for tcp, udp and sctp, not {proto}")
        if self.ports and "*" in self.ports:
            raise ValueError("no * in ports: leave them out for every port")
        return self


class Match(TfBlock):
    layer4_configs: blocks(Layer4Config, 1)  # type: ignore[valid-type]
    dest_ip_ranges: Annotated[list[CIDR], Field(max_length=5000)] | None = None
    dest_fqdns: Annotated[list[HOST], Field(max_length=100)] | None = None
    dest_address_groups: Annotated[list[str], Field(max_length=10)] | None = None

    @model_validator(mode="after")
    def _one_family(self) -> Match:
        ranges = self.dest_ip_ranges if known(self.dest_ip_ranges) else None
        families = {ipaddress.ip_network(r).version for r in ranges or ()}
        if len(families) > 1:
            raise ValueError("dest_ip_ranges of both address families in one rule")
        return self


class SecureTag(TfBlock):
    name: str


class DynamicSecureTags(TfBlock):
    for_each: list[str]
    iterator: str | None = None
    content: SecureTag


class Dynamic(TfBlock):
    target_secure_tags: DynamicSecureTags


class FirewallPolicy(Resource):
    name: RFC1035
    project: str | None = None
    description: str | None = None


class FirewallPolicyRule(Resource):
    firewall_policy: str
    project: str | None = None
    priority: Annotated[int, Field(ge=0, le=2147483647)]
    action: Literal["allow", "deny", "goto_next", "apply_security_profile_group"]
    direction: Literal["INGRESS", "EGRESS"]
    rule_name: RFC1035 | None = None
    description: str | None = None
    enable_logging: bool | None = None
    target_service_accounts: list[str] | None = None
    target_secure_tags: blocks(SecureTag, 0, 256) | None = None  # type: ignore[valid-type]
    dynamic: Dynamic | None = None
    match: blocks(Match, 1, 1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _targets(self) -> FirewallPolicyRule:
        if known(self.target_service_accounts) and self.target_service_accounts and (
                self.target_secure_tags):
            raise ValueError("target_service_accounts and target_secure_tags together")
        return self


class FirewallPolicyAssociation(Resource):
    name: str
    project: str | None = None
    attachment_target: str
    firewall_policy: str


class AddressGroup(Resource):
    name: RFC1035
    parent: Annotated[str, Field(pattern=r"^(projects|organizations)/.+")] | None = None
    location: str
    type: Literal["IPV4", "IPV6"]
    capacity: Annotated[int, Field(ge=1)]
    items: list[CIDR] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _items(self) -> AddressGroup:
        items: Any = self.items or []
        if not known(items, self.capacity, self.type):
            return self
        if len(items) > self.capacity:
            raise ValueError(f"{len(items)} items in an address group of capacity {self.capacity}")
        family = 4 if self.type == "IPV4" else 6
        if any(ipaddress.ip_network(i).version != family for i in items):
            raise ValueError(f"an item of the wrong family in a {self.type} address group")
        return self


RESOURCES: dict[str, type[Resource]] = {
    "google_compute_network_firewall_policy": FirewallPolicy,
    "google_compute_network_firewall_policy_rule": FirewallPolicyRule,
    "google_compute_network_firewall_policy_association": FirewallPolicyAssociation,
    "google_network_security_address_group": AddressGroup,
}
