"""The shape of a policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy, as far as outguard's
`k8s` export writes one: a hand-written subset for the validation tier
(tests/export/test_k8s.py), not the vendor's file.

Follows the Kubernetes SIG Network API kubernetes-sigs/network-policy-api v0.1.7, experimental
channel (the one with `domainNames`): the CRD
config/crd/experimental/policy.networking.k8s.io_adminnetworkpolicies.yaml and the Go types
apis/v1alpha1 for field names, types, enums, patterns and limits (100 rules, 100 peers and 100
ports per rule, 25 networks and 25 domain names per peer, priority 0-1000), and the CRD's CEL
rules (`isCIDR` on networks; no named port next to networks or domain names, which this model
cannot hold at all).

Stricter than the vendor where that catches a mistake of the exporter: unknown fields are
errors (the API server prunes them silently), networks are CIDRs without host bits,
protocols and selector operators are the Kubernetes enums (the CRD leaves them free strings),
a port range runs upwards, `domainNames` only in Allow rules (the API documents them for Allow
rules), and peers are the kinds outguard writes (pods, networks, domainNames).
"""

# ruff: noqa: N815  (the field names are the CRD's own camelCase)
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DOMAIN = r"^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
Protocol = Literal["TCP", "UDP", "SCTP"]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _network(value: str) -> str:
    ipaddress.ip_network(value)  # the CEL rule isCIDR(self), without host bits
    if "/" not in value:
        raise ValueError("a CIDR needs its prefix length")
    return value


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):  # x-kubernetes-list-type: set
        raise ValueError("duplicate entries in a set")
    return values


Network = Annotated[str, Field(max_length=43), AfterValidator(_network)]


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Requirement(_S):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_S):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[Requirement] | None = None


class PodSelection(_S):
    namespaceSelector: LabelSelector
    podSelector: LabelSelector


class Peer(_S):
    pods: PodSelection | None = None
    networks: Annotated[list[Network], Field(min_length=1, max_length=25),
                        AfterValidator(_unique)] | None = None
    domainNames: Annotated[list[Annotated[str, Field(pattern=DOMAIN)]],
                           Field(min_length=1, max_length=25), AfterValidator(_unique)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Peer:  # minProperties/maxProperties 1
        if len(self.model_fields_set) != 1:
            raise ValueError("a peer is exactly one of pods, networks, domainNames")
        return self


class PortNumberSpec(_S):
    protocol: Protocol
    port: PortNumber


class PortRangeSpec(_S):
    protocol: Protocol = "TCP"
    start: PortNumber
    end: PortNumber

    @model_validator(mode="after")
    def _upwards(self) -> PortRangeSpec:
        if self.start >= self.end:
            raise ValueError(f"port range {self.start}-{self.end} does not run upwards")
        return self


class Port(_S):
    portNumber: PortNumberSpec | None = None
    portRange: PortRangeSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> Port:
        if len(self.model_fields_set) != 1:
            raise ValueError("a port is exactly one of portNumber, portRange")
        return self


class EgressRule(_S):
    name: Annotated[str, Field(max_length=100)] | None = None
    action: Literal["Allow", "Deny", "Pass"]
    to: Annotated[list[Peer], Field(min_length=1, max_length=100)]
    ports: Annotated[list[Port], Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _domains_allow_only(self) -> EgressRule:
        if self.action != "Allow" and any(p.domainNames for p in self.to):
            raise ValueError(f"domainNames in a {self.action} rule")
        return self


class Subject(_S):
    namespaces: LabelSelector | None = None
    pods: PodSelection | None = None

    @model_validator(mode="after")
    def _one(self) -> Subject:
        if len(self.model_fields_set) != 1:
            raise ValueError("a subject is exactly one of namespaces, pods")
        return self


class Spec(_S):
    priority: Annotated[int, Field(ge=0, le=1000)]
    subject: Subject
    egress: Annotated[list[EgressRule], Field(max_length=100)] | None = None


class Metadata(_S):  # cluster-scoped: no namespace
    name: Annotated[str, Field(max_length=253, pattern=DNS1123_SUBDOMAIN)]
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class AdminNetworkPolicy(_S):
    apiVersion: Literal["policy.networking.k8s.io/v1alpha1"]
    kind: Literal["AdminNetworkPolicy"]
    metadata: Metadata
    spec: Spec
