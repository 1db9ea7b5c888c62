"""The hashicorp/azurerm resources outguard's `outguard-azure.tf.json` writes, as far as it
writes them: a hand-written subset for the validation tier (tests/export/test_terraform.py),
not the provider's schema file.

Follows the hashicorp/azurerm provider 4.x resource documentation (registry.terraform.io; in
hashicorp/terraform-provider-azurerm website/docs/r/: network_security_rule, ip_group,
firewall_policy_rule_collection_group, Microsoft.Network API 2024-05-01) for argument names,
types, required arguments, nested blocks and the values it lists: NSG rule priorities 100-4096,
directions, accesses and protocols (Tcp, Udp, Icmp, Esp, Ah, *), descriptions of at most 140
characters; rule collection groups and collections at priorities 100-65000 with Allow or Deny;
network rule protocols Any, TCP, UDP, ICMP; application rule protocols Http, Https, Mssql on
ports 0-64000. Names follow Azure's naming rules for these resources (1-80 characters, letters,
digits, `_`, `.`, `-`, starting with a letter or digit, ending with a letter, digit or `_`); an
IP group holds at most 5,000 entries (Azure Firewall limits).

Stricter than the provider where that catches a mistake of the exporter: only the arguments
outguard writes; exactly one of each single/plural pair of an NSG rule (port range, address
prefix); addresses are IP addresses or networks without host bits (or `*`); ports are numbers
or ranges lo-hi up to 65535; a network rule names a destination; an application rule names its
protocols.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from tests.export.vendor_terraform import ADDRESS, PORT_RANGE, Resource, TfBlock, address, blocks

NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")]


def _any_or_address(value: str) -> str:
    return value if value == "*" else address(value)


DESTINATION = Annotated[str, AfterValidator(_any_or_address)]
CollectionPriority = Annotated[int, Field(ge=100, le=65000)]


class NetworkSecurityRule(Resource):
    name: NAME
    resource_group_name: str
    network_security_group_name: str
    priority: Annotated[int, Field(ge=100, le=4096)]
    direction: Literal["Inbound", "Outbound"]
    access: Literal["Allow", "Deny"]
    protocol: Literal["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"]
    description: Annotated[str, Field(max_length=140)] | None = None
    source_port_range: PORT_RANGE
    source_address_prefix: DESTINATION
    destination_port_range: PORT_RANGE | None = None
    destination_port_ranges: Annotated[list[PORT_RANGE], Field(min_length=1)] | None = None
    destination_address_prefix: DESTINATION | None = None
    destination_address_prefixes: Annotated[list[DESTINATION], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _pairs(self) -> NetworkSecurityRule:
        if (self.destination_port_range is None) == (self.destination_port_ranges is None):
            raise ValueError("exactly one of destination_port_range and destination_port_ranges")
        if (self.destination_address_prefix is None) == (self.destination_address_prefixes is None):
            raise ValueError("exactly one of destination_address_prefix and"
                             " destination_address_prefixes")
        return self


class IpGroup(Resource):
    name: NAME
    resource_group_name: str
    location: str
    cidrs: Annotated[list[ADDRESS], Field(max_length=5000)] | None = None


class NetworkRule(TfBlock):
    name: str
    description: str | None = None
    protocols: Annotated[list[Literal["Any", "TCP", "UDP", "ICMP"]], Field(min_length=1)]
    destination_ports: Annotated[list[PORT_RANGE], Field(min_length=1)]
    source_addresses: list[DESTINATION] | None = None
    destination_addresses: list[DESTINATION] | None = None
    destination_fqdns: list[str] | None = None
    destination_ip_groups: list[str] | None = None

    @model_validator(mode="after")
    def _destination(self) -> NetworkRule:
        if not (self.destination_addresses or self.destination_fqdns
                or self.destination_ip_groups):
            raise ValueError("a network rule needs destination addresses, FQDNs or IP groups")
        return self


class AppProtocol(TfBlock):
    type: Literal["Http", "Https", "Mssql"]
    port: Annotated[int, Field(ge=0, le=64000)]


class ApplicationRule(TfBlock):
    name: str
    description: str | None = None
    source_addresses: list[DESTINATION] | None = None
    destination_fqdns: Annotated[list[str], Field(min_length=1)]
    protocols: blocks(AppProtocol, 1)  # type: ignore[valid-type]


class NetworkRuleCollection(TfBlock):
    name: NAME
    priority: CollectionPriority
    action: Literal["Allow", "Deny"]
    rule: blocks(NetworkRule, 1)  # type: ignore[valid-type]


class ApplicationRuleCollection(TfBlock):
    name: NAME
    priority: CollectionPriority
    action: Literal["Allow", "Deny"]
    rule: blocks(ApplicationRule, 1)  # type: ignore[valid-type]


class FirewallPolicyRuleCollectionGroup(Resource):
    name: NAME
    firewall_policy_id: str
    priority: CollectionPriority
    network_rule_collection: blocks(NetworkRuleCollection) | None = None  # type: ignore[valid-type]
    application_rule_collection: blocks(ApplicationRuleCollection) | None = None  # type: ignore[valid-type]


RESOURCES: dict[str, type[Resource]] = {
    "azurerm_network_security_rule": NetworkSecurityRule,
    "azurerm_ip_group": IpGroup,
    "azurerm_firewall_policy_rule_collection_group": FirewallPolicyRuleCollectionGroup,
}
