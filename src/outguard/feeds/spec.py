"""What a threat feed is: the typed model shared by the shipped registry and a policy's `feeds:`.

Place in the data flow: `registry` reads the shipped `registry.yaml` into `FeedSpec`s; a policy's
`feeds:` section (`policy.model.PolicyDoc.feeds`) holds `FeedDef`s, which `resolve` turns into
`FeedSpec`s with the same defaults. Everything downstream (fetch, parse, validate, sync) takes a
`FeedSpec`. Pure data, no I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

Format = Literal["plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield"]
FORMATS: tuple[str, ...] = ("plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield")


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


class FeedDef(_Strict):
    """A custom feed in a policy: `{url: ..., format: plain}` or `{file: /path, format: plain}`."""

    url: str | None = Field(default=None, description="http:// or https:// URL of the list")
    file: str | None = Field(default=None, description="a local list file (relative: to the"
                             " policy); a regular file, read at apply and at every update")
    format: Format = Field(default="plain", description="how the list is written")
    category: str = Field(default="custom", description="a word incidents carry with the feed")
    outbound: bool = Field(default=True, description="whether it matters for outbound traffic")
    min_interval: int = Field(default=3600, ge=60, le=7 * 86400,
                              description="seconds between two downloads")
    may_be_empty: bool = Field(default=False, description="accept an empty list")
    max_shrink: float | None = Field(default=None, ge=0, le=1, description=(
        "refuse losing more than this fraction of the last good copy (default 0.5)"))
    max_growth: float | None = Field(default=None, ge=1, description=(
        "refuse growing more than this factor (default 3; judged against at least 100 entries)"))
    max_coverage4: float | None = Field(default=None, gt=0, le=1, description=(
        "refuse blocking more than this share of the IPv4 address space (default 0.02)"))
    max_coverage6: float | None = Field(default=None, gt=0, le=1, description=(
        "refuse blocking more than this share of the IPv6 address space (default 2^-20)"))
    max_bytes: int = Field(default=64 << 20, ge=1024, le=1 << 30,
                           description="larger downloads or files are refused")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FeedDef:
        if (self.url is None) == (self.file is None):
            raise ValueError("a feed has either 'url' or 'file', not both and not neither")
        return self


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
