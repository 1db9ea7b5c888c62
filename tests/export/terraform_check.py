"""A check of Terraform JSON syntax (`*.tf.json`) against hand-written models of the provider
resources outguard writes (vendor_terraform_aws, vendor_terraform_azurerm,
vendor_terraform_google): what `terraform validate` would say about the document, and more,
without Terraform (which cannot be installed here).

Checked here: top-level keys; every resource type is one the provider's model set has;
resource labels; every `${var.X}`, `${local.X}` and `${TYPE.NAME.attr}` points at something the
document declares. Checked by the models: every argument is one the resource has (not `id` or
another computed attribute), required arguments and blocks are there, values have the
argument's type, enum, pattern and limits (`${…}` stands for any value), nested blocks within
their item limits, `dynamic` blocks by their `content`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.export import vendor_terraform_aws, vendor_terraform_azurerm, vendor_terraform_google
from tests.export.vendor_terraform import Resource, problems

PROVIDERS: dict[str, dict[str, type[Resource]]] = {
    "aws": vendor_terraform_aws.RESOURCES, "azurerm": vendor_terraform_azurerm.RESOURCES,
    "google": vendor_terraform_google.RESOURCES}
TOP = {"terraform", "variable", "locals", "resource", "output", "provider", "//"}
_REF = re.compile(r"\b(var|local)\.([A-Za-z_][\w-]*)|\b((?:aws|azurerm|google)_\w+)\.([\w-]+)\.")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check(text: str, provider: str) -> list[str]:
    """The problems of a `.tf.json` document for `provider` (empty: none)."""
    doc = json.loads(text)
    models = PROVIDERS[provider]
    errors = [f"{k}: not a top-level key of Terraform JSON" for k in doc if k not in TOP]
    declared = {("var", v) for v in doc.get("variable", {})} | {
        ("local", v) for v in doc.get("locals", {})}
    for kind, resources in doc.get("resource", {}).items():
        if kind not in models:
            errors.append(f"resource {kind}: not a resource outguard writes for {provider}")
            continue
        for label, body in resources.items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*", label):
                errors.append(f"resource {kind}.{label}: not a valid label")
            declared.add((kind, label))
            errors += problems(models[kind], body, f"{kind}.{label}")
    for text_value in _strings({k: v for k, v in doc.items() if k != "//"}):
        for match in _REF.finditer(text_value if "${" in text_value else ""):
            key = (match.group(1), match.group(2)) if match.group(1) else (
                match.group(3), match.group(4))
            if key not in declared and key[0] != "target_secure_tags":
                errors.append(f"{text_value}: {'.'.join(key)} is not declared")
    return errors
