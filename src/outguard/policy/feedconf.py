"""The policy's `feeds:` section: a policy's own threat feeds, next to the shipped registry.

    feeds:
      my-blocklist: {url: "https://example.org/drop.txt", format: plain}
      local-list: {file: blocked.txt, max_shrink: 0.9}

Place in the data flow: `policy.model.PolicyDoc.feeds` holds these; `feeds.registry.resolve`
turns one into the `feeds.spec.FeedSpec` every later step takes (with the registry's limits as
defaults). Pure data, no I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Format = Literal["plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield"]
FORMATS: tuple[str, ...] = ("plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
