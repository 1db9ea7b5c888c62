"""One security-group rule as AWS counts it: shared by the AWS export (`aws`) and its Terraform
form (`terraform_aws`), which would otherwise import each other."""

from __future__ import annotations

from dataclasses import dataclass


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
