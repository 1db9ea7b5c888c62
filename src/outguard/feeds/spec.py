"""What a threat feed is: `FeedSpec`, the typed model of the shipped registry and of a policy's
own feeds.

Place in the data flow: `registry` reads the shipped `registry.yaml` into `FeedSpec`s; a policy's
`feeds:` section holds `policy.feedconf.FeedDef`s, which `resolve` turns into `FeedSpec`s with
the same defaults (`spec_of`). Everything downstream (fetch, parse, validate, sync) takes a
`FeedSpec`. Pure data, no I/O.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from outguard.policy.feedconf import FeedDef, Format

FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The share of an IP version's address space one feed may block, after never-block removal.
# IPv4: 2 % (~86M addresses, five /8s): Spamhaus DROP is ~0.5 %, FireHOL level1 ~2 % (the
# registry gives it 5 %); 223 separate /8s (84 %) pass every per-entry check and are refused
# here. IPv6: 2^-20 of the space, 4,096 /32s: Spamhaus DROPv6 is ~250 /32s.
MAX_COVERAGE4 = 0.02
MAX_COVERAGE6 = 2.0 ** -20


class Limits(_Strict):
    """Sanity limits against the last good copy; a feed may loosen them for itself."""

    may_be_empty: bool = False
    max_shrink: float = Field(default=0.5, ge=0, le=1)  # refuse losing more than this fraction
    max_growth: float = Field(default=3.0, ge=1)  # refuse growing more than this factor
    min_prefix4: int = Field(default=8, ge=0, le=32)  # refuse IPv4 prefixes wider than /8
    min_prefix6: int = Field(default=24, ge=0, le=128)  # refuse IPv6 prefixes wider than /24
    max_coverage4: float = Field(default=MAX_COVERAGE4, gt=0, le=1)  # share of the IPv4 space
    max_coverage6: float = Field(default=MAX_COVERAGE6, gt=0, le=1)  # share of the IPv6 space


class FeedSpec(_Strict):
    """A resolved feed: where it comes from, how to read it, and what it is for."""

    name: str
    url: str | None = None
    file: str | None = None
    format: Format
    category: str
    outbound: bool = True
    licence: str = ""
    terms: str = ""  # the licence in a few words, for `feeds list`
    min_interval: int = 3600
    max_bytes: int = 64 << 20
    limits: Limits = Field(default_factory=Limits)
    description: str = ""

    @property
    def source(self) -> str:
        return self.url if self.url is not None else f"file:{self.file}"


def spec_of(name: str, d: FeedDef) -> FeedSpec:
    given = {key: value for key in ("max_shrink", "max_growth", "max_coverage4", "max_coverage6")
             if (value := getattr(d, key)) is not None}
    limits = Limits(may_be_empty=d.may_be_empty, **given)
    return FeedSpec(name=name, url=d.url, file=d.file, format=d.format, category=d.category,
                    outbound=d.outbound, min_interval=d.min_interval, max_bytes=d.max_bytes,
                    limits=limits, description="custom feed from the policy")
