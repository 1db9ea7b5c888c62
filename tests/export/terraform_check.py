"""A check of Terraform JSON syntax (`*.tf.json`) against provider schema documents in the
format of `terraform providers schema -json` (tests/export/terraform_schemas/, trimmed to the
resources outguard writes): what `terraform validate` would say about the resources, without
Terraform (which cannot be installed here).

Checked: top-level keys; every resource type is in the schema; every attribute is one the
schema has and not `id`; required attributes and blocks (min_items) are there; values have the
attribute's type (an interpolation `${…}` stands for any type); nested blocks as objects or
lists of objects within their item limits, `dynamic` blocks by their `content`; every
`${var.X}`, `${local.X}` and `${TYPE.NAME.attr}` points at something the document declares.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).parent / "terraform_schemas"
TOP = {"terraform", "variable", "locals", "resource", "output", "provider", "//"}
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "//"}
_REF = re.compile(r"\b(var|local)\.([A-Za-z_][\w-]*)|\b((?:aws|azurerm|google)_\w+)\.([\w-]+)\.")


def load_schema(provider: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / f"{provider}.json").read_text())
    (schemas,) = doc["provider_schemas"].values()
    return dict(schemas["resource_schemas"])


def _expr(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _type_ok(typ: Any, value: Any) -> bool:
    if _expr(value) or typ == "dynamic":
        return True
    if typ == "string":
        return isinstance(value, str)
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ == "bool":
        return isinstance(value, bool)
    kind, inner = typ[0], typ[1]
    if kind in ("list", "set"):
        return isinstance(value, list) and all(_type_ok(inner, v) for v in value)
    if kind == "map":
        return isinstance(value, dict) and all(_type_ok(inner, v) for v in value.values())
    if kind == "object":
        return isinstance(value, dict) and all(k in inner and _type_ok(inner[k], v)
                                               for k, v in value.items())
    return False


def _block(schema: dict[str, Any], body: dict[str, Any], where: str, errors: list[str],
           *, meta: bool = False) -> None:
    attrs = schema.get("attributes", {})
    blocks = schema.get("block_types", {})
    for key, value in body.items():
        if (meta and key in META) or key == "//":
            continue
        if key == "dynamic":
            for name, dyn in value.items():
                if name not in blocks:
                    errors.append(f"{where}.dynamic.{name}: not a block")
                else:
                    _block(blocks[name]["block"], dyn["content"], f"{where}.dynamic.{name}", errors)
            continue
        if key in attrs:
            if key == "id" or (attrs[key].get("computed") and not (
                    attrs[key].get("optional") or attrs[key].get("required"))):
                errors.append(f"{where}.{key}: computed, cannot be set")
            elif not _type_ok(attrs[key]["type"], value):
                errors.append(f"{where}.{key}: {value!r} is not {attrs[key]['type']}")
        elif key in blocks:
            spec = blocks[key]
            items = value if isinstance(value, list) else [value]
            if spec["nesting_mode"] in ("single", "group") and isinstance(value, list):
                errors.append(f"{where}.{key}: one block, not a list")
            if len(items) > spec.get("max_items", len(items)):
                errors.append(f"{where}.{key}: {len(items)} blocks, at most {spec['max_items']}")
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    errors.append(f"{where}.{key}[{i}]: a block is an object")
                else:
                    _block(spec["block"], item, f"{where}.{key}[{i}]", errors)
        else:
            errors.append(f"{where}.{key}: not an attribute or block of the schema")
    for key, spec in attrs.items():
        if spec.get("required") and key not in body:
            errors.append(f"{where}.{key}: required")
    dynamic = body.get("dynamic", {})
    for key, spec in blocks.items():
        if spec.get("min_items", 0) > 0 and key not in body and key not in dynamic:
            errors.append(f"{where}.{key}: at least {spec['min_items']} block(s) required")


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
    schemas = load_schema(provider)
    errors = [f"{k}: not a top-level key of Terraform JSON" for k in doc if k not in TOP]
    declared = {("var", v) for v in doc.get("variable", {})} | {
        ("local", v) for v in doc.get("locals", {})}
    for kind, resources in doc.get("resource", {}).items():
        if kind not in schemas:
            errors.append(f"resource {kind}: not in the {provider} schema")
            continue
        for label, body in resources.items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*", label):
                errors.append(f"resource {kind}.{label}: not a valid label")
            declared.add((kind, label))
            _block(schemas[kind]["block"], body, f"{kind}.{label}", errors, meta=True)
    for text_value in _strings({k: v for k, v in doc.items() if k != "//"}):
        for match in _REF.finditer(text_value if "${" in text_value else ""):
            key = (match.group(1), match.group(2)) if match.group(1) else (
                match.group(3), match.group(4))
            if key not in declared and key[0] != "target_secure_tags":
                errors.append(f"{text_value}: {'.'.join(key)} is not declared")
    return errors
