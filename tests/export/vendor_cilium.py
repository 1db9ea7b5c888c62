"""The shape of cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy, as far as
outguard's `k8s` export writes them: a hand-written subset for the validation tier
(tests/export/test_k8s.py), not the vendor's file.

Follows Cilium v1.18: the CRD's OpenAPI schema (cilium/cilium,
pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml and
ciliumclusterwidenetworkpolicies.yaml, which share the rule schema) for field names, types,
enums, patterns and limits, and the agent's rule sanitation (pkg/policy/api/rule_validation.go)
for what the API server accepts but the agent refuses: one L3 selector kind per rule, ICMP
rules without toPorts, DNS rules only with a non-zero single port.

Stricter than the vendor where that catches a mistake of the exporter: unknown fields are
errors everywhere (the API server would keep or prune them silently), CIDRs must be networks
without host bits, ICMP types are numbers, `egressDeny` port lists keep the 40-port limit of
`egress`, and every policy must select by `endpointSelector` (outguard writes no host policy).
"""

# ruff: noqa: N815  (the field names are the CRD's own camelCase)
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PORT = (r"^((6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
        r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*)$")  # a number or an IANA service name
MAX_PORTS = 40


def _network(value: str) -> str:
    ipaddress.ip_network(value)  # strict: 203.0.113.1/24 is an error, not 203.0.113.0/24
    if "/" not in value:
        raise ValueError("a CIDR needs its prefix length")
    return value


CIDR = Annotated[str, AfterValidator(_network)]
FQDN_NAME = Annotated[str, Field(max_length=255, pattern=r"^([-a-zA-Z0-9_]+[.]?)+$")]
FQDN_PATTERN = Annotated[str, Field(max_length=255, pattern=r"^([-a-zA-Z0-9_*]+[.]?)+$")]
LABEL_VALUE = Annotated[str, Field(max_length=63,
                                   pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
Entity = Literal["all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node",
                 "health", "none", "kube-apiserver"]


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Requirement(_S):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None

    @model_validator(mode="after")
    def _values(self) -> Requirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError(f"{self.operator} takes values; Exists/DoesNotExist take none")
        return self


class EndpointSelector(_S):
    matchLabels: dict[str, LABEL_VALUE] | None = None
    matchExpressions: list[Requirement] | None = None


class CIDRRule(_S):
    cidr: CIDR  # cidrGroupRef / cidrGroupSelector: not written


class FQDNSelector(_S):
    matchName: FQDN_NAME | None = None
    matchPattern: FQDN_PATTERN | None = None

    @model_validator(mode="after")
    def _one(self) -> FQDNSelector:
        if (self.matchName is None) == (self.matchPattern is None):
            raise ValueError("exactly one of matchName and matchPattern")
        return self


class PortProtocol(_S):
    port: Annotated[str, Field(pattern=PORT)]
    endPort: Annotated[int, Field(ge=0, le=65535)] | None = None
    protocol: Literal["TCP", "UDP", "SCTP", "ANY"] = "ANY"

    @model_validator(mode="after")
    def _range(self) -> PortProtocol:
        if self.endPort is not None and (not self.port.isdigit() or self.endPort < int(self.port)):
            raise ValueError(f"endPort {self.endPort} below port {self.port}")
        return self


class L7Rules(_S):
    dns: Annotated[list[FQDNSelector], Field(min_length=1)]  # http/kafka/l7proto: not written


class PortRule(_S):
    ports: Annotated[list[PortProtocol], Field(max_length=MAX_PORTS)] | None = None
    rules: L7Rules | None = None

    @model_validator(mode="after")
    def _dns(self) -> PortRule:
        if self.rules is not None and not (self.ports and all(
                p.port != "0" and p.endPort is None for p in self.ports)):
            raise ValueError("DNS rules need their ports, none 0 and no range")
        return self


class PortDenyRule(_S):
    ports: Annotated[list[PortProtocol], Field(max_length=MAX_PORTS)] | None = None


class ICMPField(_S):
    family: Literal["IPv4", "IPv6"] = "IPv4"
    type: Annotated[int, Field(ge=0, le=255)]


class ICMPRule(_S):
    fields: Annotated[list[ICMPField], Field(max_length=40)]


L3 = ("toCIDRSet", "toEntities", "toEndpoints", "toFQDNs")


class _Egress(_S):
    toCIDRSet: list[CIDRRule] | None = None
    toEntities: list[Entity] | None = None
    toEndpoints: list[EndpointSelector] | None = None
    icmps: list[ICMPRule] | None = None

    @model_validator(mode="after")
    def _sanitize(self) -> _Egress:
        present = [name for name in L3 if getattr(self, name, None)]
        if len(present) > 1:
            raise ValueError(f"one L3 selector per rule, not {' and '.join(present)}")
        if self.icmps and getattr(self, "toPorts", None):
            raise ValueError("icmps only in a rule without toPorts")
        return self


class EgressRule(_Egress):
    toFQDNs: list[FQDNSelector] | None = None
    toPorts: list[PortRule] | None = None


class EgressDenyRule(_Egress):  # no toFQDNs and no L7 rules in deny rules
    toPorts: list[PortDenyRule] | None = None


class DefaultDeny(_S):
    egress: bool | None = None
    ingress: bool | None = None


class Spec(_S):
    endpointSelector: EndpointSelector
    enableDefaultDeny: DefaultDeny | None = None
    egress: list[EgressRule] | None = None
    egressDeny: list[EgressDenyRule] | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> Spec:
        if not (self.egress or self.egressDeny):  # the CRD's anyOf (ingress: not written)
            raise ValueError("a policy needs egress or egressDeny rules")
        return self


class Metadata(_S):
    name: Annotated[str, Field(max_length=253, pattern=DNS1123_SUBDOMAIN)]
    namespace: Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)] | None = None
    labels: dict[str, LABEL_VALUE] | None = None
    annotations: dict[str, str] | None = None


class CiliumNetworkPolicy(_S):
    apiVersion: Literal["cilium.io/v2"]
    kind: Literal["CiliumNetworkPolicy"]
    metadata: Metadata
    spec: Spec


class CiliumClusterwideNetworkPolicy(CiliumNetworkPolicy):
    kind: Literal["CiliumClusterwideNetworkPolicy"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _cluster_scoped(self) -> CiliumClusterwideNetworkPolicy:
        if self.metadata.namespace is not None:
            raise ValueError("a clusterwide policy has no namespace")
        return self
