"""The shipped feed registry (`registry.yaml`, package data) and name resolution.

Place in the data flow: `@feed:NAME` in a policy, `outguard feeds list|show|update` and the agent's
scheduler ask `resolve(name, custom)` for a `FeedSpec`: a policy's own `feeds:` entry wins over
the registry's entry of the same name. Reads one packaged file; otherwise pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources

import yaml

from outguard.errors import OutguardError
from outguard.feeds.spec import FeedSpec, spec_of
from outguard.policy.feedconf import FeedDef


class FeedError(OutguardError):
    """A feed that is unknown, unreadable or refused; the message names the feed."""


@cache
def registry() -> dict[str, FeedSpec]:
    text = resources.files("outguard.feeds").joinpath("registry.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    return {name: FeedSpec(name=name, **entry) for name, entry in data.items()}


def resolve(name: str, custom: Mapping[str, FeedDef] | None = None) -> FeedSpec:
    if custom and name in custom:
        return spec_of(name, custom[name])
    try:
        return registry()[name]
    except KeyError:
        known = ", ".join(sorted({*registry(), *(custom or {})}))
        raise FeedError(f"no feed named {name!r} (known: {known})") from None


def known(custom: Mapping[str, FeedDef] | None = None) -> dict[str, FeedSpec]:
    out = dict(registry())
    for name, d in (custom or {}).items():
        out[name] = spec_of(name, d)
    return out
