"""The GCP export as data (options and REST bodies): shared by `gcp`, which builds it, and
`terraform_gcp`, which writes it as Terraform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GcpOptions:
    """Where the policy goes and which VMs it applies to (placeholders unless given)."""

    project: str = "PROJECT_ID"
    network: str = "NETWORK"
    policy: str = "outguard-egress"
    service_accounts: tuple[str, ...] = ()
    secure_tags: tuple[str, ...] = ()  # tagValues/123…: secure tags made for GCE firewalls

    def target(self) -> dict[str, Any]:
        if self.secure_tags:
            return {"targetSecureTags": [{"name": t} for t in self.secure_tags]}
        accounts = self.service_accounts or (
            f"outguard-egress@{self.project}.iam.gserviceaccount.com",)
        return {"targetServiceAccounts": list(accounts)}

    def target_text(self) -> str:
        if self.secure_tags:
            return "VMs with secure tag " + ", ".join(self.secure_tags)
        return "VMs running as " + ", ".join(self.target()["targetServiceAccounts"])


@dataclass
class GcpPlan:
    """The policy as REST bodies: address groups, rules (in priority order), association."""

    options: GcpOptions
    address_groups: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    rule_keys: list[str] = field(default_factory=list)  # the outguard rule of each rule

    def group_path(self, name: str) -> str:
        return f"projects/{self.options.project}/locations/global/addressGroups/{name}"
