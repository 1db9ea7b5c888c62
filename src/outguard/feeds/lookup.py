"""Which feeds contain a destination: the monitor tags a blocked packet with feed name and category.

Place in the data flow: monitor (decode → attribute → **classify**) asks `FeedIndex.lookup(addr)`
for an address an NFLOG message carried; the NFLOG prefix still names the deny rule
(`og:deny:<rule>`), this adds which of the rule's feeds hold the address. Built from a loaded
policy (`of_policy`) or from the last good copies (`of_store`). Pure lookups: bisect on the
sorted integers of each feed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from outguard.feeds.merge import FeedSet
from outguard.feeds.policy import PREFIX, FeedList
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.policy.addresses import parse_ip
from outguard.policy.loaded import Policy


@dataclass(frozen=True)
class FeedHit:
    feed: str
    category: str
    outbound: bool


class FeedIndex:
    def __init__(self, feeds: Iterable[tuple[FeedSpec, FeedSet]]) -> None:
        self.feeds = list(feeds)

    @classmethod
    def of_policy(cls, policy: Policy) -> FeedIndex:
        return cls((fl.spec, fl.content) for fl in policy.lists.values()
                   if isinstance(fl, FeedList) and fl.name.startswith(PREFIX))

    @classmethod
    def of_store(cls, store: FeedStore, specs: Iterable[FeedSpec]) -> FeedIndex:
        return cls((spec, store.read_copy(spec.name)) for spec in specs)

    def lookup(self, destination: str) -> list[FeedHit]:
        """Feeds whose content holds this address (or host name, for domain feeds)."""
        parsed = parse_ip(destination)
        hits = []
        for spec, content in self.feeds:
            if parsed is not None:
                found = content.contains(parsed[0], parsed[1])
            else:
                found = destination.lower().rstrip(".") in content.domains
            if found:
                hits.append(FeedHit(spec.name, spec.category, spec.outbound))
        return hits
