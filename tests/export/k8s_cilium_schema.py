"""The shape of a cilium.io/v2 CiliumNetworkPolicy, as far as outguard writes one, for tests.

No Cilium CRD schema can be installed here (Cilium ships it inside its Go module and Helm
chart, neither reachable from this machine's registries), so this is a hand-written subset of
the CRD's OpenAPI schema (cilium/pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies
.yaml, v1.16): the same field names, types, enums, patterns and maxItems, and — stricter than
the CRD — unknown fields are errors, so a typo cannot slip through as "preserved unknown".
"""

# ruff: noqa: N815  (the field names are the CRD's own camelCase)
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CIDR = Annotated[str, Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]
FQDN_NAME = Annotated[str, Field(pattern=r"^([-a-zA-Z0-9_]+[.]?)+$")]
FQDN_PATTERN = Annotated[str, Field(pattern=r"^([-a-zA-Z0-9_*]+[.]?)+$")]


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CIDRRule(_S):
    cidr: CIDR
    except_: list[CIDR] | None = Field(default=None, alias="except")


class FQDNSelector(_S):
    matchName: FQDN_NAME | None = None
    matchPattern: FQDN_PATTERN | None = None


class PortProtocol(_S):
    port: Annotated[str, Field(pattern=r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}"
                                       r"|[1-5][0-9]{4}|[0-9]{1,4})$")]
    endPort: Annotated[int, Field(ge=0, le=65535)] | None = None
    protocol: Literal["TCP", "UDP", "SCTP", "ANY"] = "ANY"


class PortRuleDNS(_S):
    matchName: FQDN_NAME | None = None
    matchPattern: FQDN_PATTERN | None = None


class L7Rules(_S):
    dns: list[PortRuleDNS] | None = None


class PortRule(_S):
    ports: Annotated[list[PortProtocol], Field(max_length=40)] | None = None
    rules: L7Rules | None = None


class PortDenyRule(_S):
    ports: Annotated[list[PortProtocol], Field(max_length=40)] | None = None


class ICMPField(_S):
    family: Literal["IPv4", "IPv6"] = "IPv4"
    type: int | str


class ICMPRule(_S):
    fields: Annotated[list[ICMPField], Field(max_length=40)]


class EndpointSelector(_S):
    matchLabels: dict[str, str] | None = None


Entity = Literal["all", "world", "cluster", "host", "remote-node", "kube-apiserver", "init",
                 "health", "unmanaged", "none", "ingress", "world-ipv4", "world-ipv6"]


class EgressRule(_S):
    toCIDRSet: list[CIDRRule] | None = None
    toEntities: list[Entity] | None = None
    toEndpoints: list[EndpointSelector] | None = None
    toFQDNs: list[FQDNSelector] | None = None
    toPorts: list[PortRule] | None = None
    icmps: list[ICMPRule] | None = None


class EgressDenyRule(_S):  # no toFQDNs, no L7 rules in deny policies
    toCIDRSet: list[CIDRRule] | None = None
    toEntities: list[Entity] | None = None
    toEndpoints: list[EndpointSelector] | None = None
    toPorts: list[PortDenyRule] | None = None
    icmps: list[ICMPRule] | None = None


class DefaultDeny(_S):
    egress: bool | None = None
    ingress: bool | None = None


class Spec(_S):
    endpointSelector: EndpointSelector
    enableDefaultDeny: DefaultDeny | None = None
    egress: list[EgressRule] | None = None
    egressDeny: list[EgressDenyRule] | None = None


class Metadata(_S):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
    labels: dict[str, str] | None = None


class CiliumNetworkPolicy(_S):
    apiVersion: Literal["cilium.io/v2"]
    kind: Literal["CiliumNetworkPolicy"]
    metadata: Metadata
    spec: Spec
