"""Terraform in JSON syntax (`*.tf.json`) for the cloud targets: the pieces every provider's
file shares.

Place in the data flow: a cloud exporter's plan (`aws`, `azure`, `gcp`) →
`terraform_aws` / `terraform_azure` / `terraform_gcp` → `TfDoc` → one `outguard-<cloud>.tf.json`
file of that target's export. Terraform reads JSON syntax as it reads HCL (`terraform init &&
terraform plan` in the directory), and its state makes an apply converge: a rule the policy no
longer has is destroyed, which the REST/ARM files cannot do by themselves.

Resource labels come from a `NameBook` (stable from one export to the next: Terraform would
otherwise destroy and re-create every rule when one is added in the middle).
"""

from __future__ import annotations

import json
from typing import Any

from outguard.export.cloud_names import NameBook, tf_name


class TfDoc:
    """One `.tf.json` document: required provider, variables, locals, resources."""

    def __init__(self, provider: str, source: str, version: str) -> None:
        self.provider = provider
        self.doc: dict[str, Any] = {
            "terraform": {"required_providers": {provider: {"source": source,
                                                            "version": version}}}}
        self._labels: dict[str, NameBook] = {}

    def variable(self, name: str, description: str, *, type_: str = "string",
                 default: Any = None, has_default: bool = False) -> str:
        body: dict[str, Any] = {"type": type_, "description": description}
        if has_default:
            body["default"] = default
        self.doc.setdefault("variable", {})[name] = body
        return f"${{var.{name}}}"

    def local(self, name: str, value: Any) -> str:
        self.doc.setdefault("locals", {})[name] = value
        return f"${{local.{name}}}"

    def resource(self, kind: str, label: str, body: dict[str, Any]) -> str:
        """Add a resource; returns its address (`kind.label`) with a unique label."""
        book = self._labels.setdefault(kind, NameBook(tf_name, 64, fold=False, sep="_"))
        name = book.take(label)
        self.doc.setdefault("resource", {}).setdefault(kind, {})[name] = body
        return f"{kind}.{name}"

    def text(self) -> str:
        return json.dumps(self.doc, indent=2) + "\n"


def ref(address: str, attr: str = "id") -> str:
    """An interpolation of a resource's attribute."""
    return f"${{{address}.{attr}}}"
