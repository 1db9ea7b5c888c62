"""The pieces the hand-written Terraform resource models share (vendor_terraform_aws,
vendor_terraform_azurerm, vendor_terraform_google), and the check of one resource body.

Terraform's JSON syntax (developer.hashicorp.com/terraform/language/syntax/json): a resource
body is an object of arguments and nested blocks; a nested block is an object or a list of
objects; any argument may be a template `"${…}"` that Terraform evaluates (here it stands for
any value: the references it makes are checked by terraform_check); the meta-arguments
(`count`, `for_each`, `depends_on`, `lifecycle`, `provider`) and `"//"` comments go next to the
arguments; `dynamic` blocks generate nested blocks from `for_each` and `content`.

The models are strict: an unknown argument is an error (Terraform says "Unsupported argument"),
so is a computed-only attribute such as `id`; types are not coerced ("1" is not a number).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

TEMPLATE = re.compile(r"\$\{.+\}", re.DOTALL)


class TfBlock(BaseModel):
    """A block of a provider's schema: its arguments and nested blocks, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False,
                              regex_engine="python-re")  # the vendors' patterns look ahead

    @field_validator("*", mode="wrap")
    @classmethod
    def _template(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, str) and TEMPLATE.fullmatch(value):
            return value  # Terraform's value, known at plan time
        return handler(value)


class Resource(TfBlock):
    """A resource body: the provider's arguments plus Terraform's meta-arguments."""

    comment: str | None = Field(default=None, alias="//")
    count: int | None = None
    for_each: dict[str, Any] | list[str] | None = None
    depends_on: list[str] | None = None
    lifecycle: dict[str, Any] | None = None
    provider: str | None = None


def known(*values: Any) -> bool:
    """None of `values` is a template (a model's cross-field checks skip those)."""
    return not any(isinstance(v, str) and TEMPLATE.fullmatch(v) for v in values)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def blocks(model: type[TfBlock], lo: int = 0, hi: int | None = None) -> Any:
    """A nested block of `model`, written as one object or as a list, `lo`-`hi` of them."""
    return Annotated[list[model], BeforeValidator(_as_list),  # type: ignore[valid-type]
                     Field(min_length=lo, max_length=hi)]


def _cidr(version: int | None) -> Any:
    def check(value: str) -> str:
        net = ipaddress.ip_network(value)  # strict: no host bits
        if "/" not in value or (version and net.version != version):
            raise ValueError(f"{value} is not an IPv{version or '4/6'} CIDR")
        return value
    return AfterValidator(check)


CIDR4 = Annotated[str, _cidr(4)]
CIDR6 = Annotated[str, _cidr(6)]
CIDR = Annotated[str, _cidr(None)]


def address(value: str) -> str:
    """An IP address or a network without host bits."""
    ipaddress.ip_network(value)
    return value


ADDRESS = Annotated[str, AfterValidator(address)]


def _port_range(value: str) -> str:
    if value != "*":
        lo, _, hi = value.partition("-")
        if not (lo.isdigit() and (hi or lo).isdigit() and int(lo) <= int(hi or lo) <= 65535):
            raise ValueError(f"{value!r} is not a port, a range lo-hi or *")
    return value


PORT_RANGE = Annotated[str, AfterValidator(_port_range)]


def problems(model: type[Resource], body: Any, where: str) -> list[str]:
    """What is wrong with one resource body, each as `where.path: message`."""
    try:
        model.model_validate(body)
    except ValidationError as err:
        return [f"{where}{''.join(f'.{p}' for p in e['loc'])}: {e['msg']}" for e in err.errors()]
    return []
