"""A strict check of ARM resource bodies against the Azure SDK's own models
(`azure-mgmt-network`): every key must be a field the model knows and may be written (not
read-only), every enum value one the model lists (Azure compares them without case), every
nested object checked against its own model, polymorphic ones by their discriminator. The
SDK's models accept anything by themselves (they are mappings); this walks their field
metadata. ARM expressions ("[parameters('x')]") are not checked further."""

from __future__ import annotations

import enum
import sys
import typing
from typing import Any

from azure.mgmt.network import models
from azure.mgmt.network._utils.model_base import Model, _RestField

_MODELS_MODULE = sys.modules[models.SecurityRule.__module__]


def _fields(cls: type) -> dict[str, tuple[str, _RestField]]:
    cls()  # the model names its fields' REST names when it is first made
    table: dict[str, _RestField] = cls._attr_to_rest_field  # type: ignore[attr-defined]
    return {field._rest_name: (attr, field) for attr, field in table.items()}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(_MODELS_MODULE) | {"_models": models})


def _check_value(typ: Any, value: Any, where: str, errors: list[str]) -> None:
    if isinstance(value, str) and value.startswith("[") and not value.startswith("[["):
        return  # an ARM expression
    origin = typing.get_origin(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            allowed = {str(m.value).lower() for e in enums for m in e}
            if value.lower() not in allowed:
                errors.append(f"{where}: {value!r} is not one of {sorted(allowed)}")
            return
        for arg in args:
            if typing.get_origin(arg) is list or (isinstance(arg, type) and issubclass(arg, Model)):
                _check_value(arg, value, where, errors)
                return
        return
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: a list expected")
            return
        (item,) = typing.get_args(typ)
        for i, v in enumerate(value):
            _check_value(item, v, f"{where}[{i}]", errors)
        return
    if isinstance(typ, type) and issubclass(typ, Model):
        check(typ, value, where, errors)
    elif typ is int and not isinstance(value, int):
        errors.append(f"{where}: an integer expected, not {value!r}")
    elif typ is str and not isinstance(value, str):
        errors.append(f"{where}: a string expected, not {value!r}")


def check(cls: type, data: Any, where: str = "", errors: list[str] | None = None) -> list[str]:
    """The problems of `data` as a body of model `cls` (empty: none)."""
    errors = [] if errors is None else errors
    if not isinstance(data, dict):
        errors.append(f"{where}: an object expected")
        return errors
    mapping = getattr(cls, "__mapping__", None)
    if mapping:
        disc = next((rest for rest, (_a, f) in _fields(cls).items() if f._is_discriminator), None)
        if disc is not None and data.get(disc) in mapping:
            cls = mapping[data[disc]]
        elif disc is not None:
            errors.append(f"{where}.{disc}: {data.get(disc)!r} is not one of {sorted(mapping)}")
    fields = _fields(cls)
    hints = _hints(cls)
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{where}.{key}: not a field of {cls.__name__}")
            continue
        attr, field = fields[key]
        if field._visibility is not None and not {"create", "update"} & set(field._visibility):
            errors.append(f"{where}.{key}: read-only in {cls.__name__}")
        _check_value(hints[attr], value, f"{where}.{key}", errors)
    return errors


RESOURCE_MODELS: dict[str, type] = {
    "Microsoft.Network/networkSecurityGroups/securityRules": models.SecurityRule,
    "Microsoft.Network/networkSecurityGroups": models.NetworkSecurityGroup,
    "Microsoft.Network/ipGroups": models.IpGroup,
    "Microsoft.Network/firewallPolicies/ruleCollectionGroups": models.FirewallPolicyRuleCollectionGroup,
}
TEMPLATE_KEYS = {"type", "apiVersion", "name", "location", "dependsOn"}


def check_template(doc: dict[str, Any]) -> list[str]:
    """Every resource of an ARM template against its model (its ARM-only keys aside)."""
    errors: list[str] = []
    for i, res in enumerate(doc["resources"]):
        cls = RESOURCE_MODELS.get(res["type"])
        if cls is None:
            errors.append(f"resources[{i}]: no model for {res['type']}")
            continue
        body = {k: v for k, v in res.items() if k not in TEMPLATE_KEYS}
        check(cls, body, f"resources[{i}]", errors)
    return errors
