"""DNS tunnelling through an allowed wildcard: data carried in the names a client asks for.

Pure; the resolver asks `TunnelDetector.check` for every query it forwards under a wildcard rule
(`*.cdn.example.test`) or a rule for every destination. An exact name cannot carry data (it is
fixed), a refused one never leaves (refused names get `tunneling_hint` on their event).
Two signs, as iodine / dnscat2 / DNSExfiltrator traffic shows them:
- one name with a long, random-looking label, or a very long name (`tunneling_hint`);
- many distinct names below one zone within a minute (each query carries a new chunk): more
  than `per_minute` distinct names under one wildcard (a CDN's or a bucket service's names
  repeat; a tunnel's never do).

Reports are rate-limited per zone and minute (`report_per_minute`): a tunnel is one incident
with a count, not thousands. Memory is bounded: per zone at most `per_minute + 1` name hashes,
at most `max_zones` zones per window.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def tunneling_hint(name: str) -> str | None:
    """Why a name looks like data carried in DNS (long random labels), or None."""
    labels = name.split(".")
    longest = max(labels, key=len)
    if len(longest) >= 24 and _entropy(longest) >= 3.5:
        return f"a {len(longest)}-character random-looking label (DNS tunneling?)"
    if len(name) >= 120 and sum(len(label) for label in labels[:-2]) >= 90:
        return f"a {len(name)}-character name carrying long labels (DNS tunneling?)"
    return None


@dataclass
class _Zone:
    start: float
    names: set[int] = field(default_factory=set)
    reports: int = 0
    tripped: bool = False


@dataclass
class TunnelDetector:
    per_minute: int = 100
    window: float = 60.0
    report_per_minute: int = 3
    max_zones: int = 10_000
    zones: dict[str, _Zone] = field(default_factory=dict)
    suspects: int = 0  # queries that looked like tunnelling, reported or not

    def check(self, qname: str, zone: str, now: float) -> str | None:
        """Why this forwarded query looks like tunnelling, when it is to be reported; else None.

        `zone` is the wildcard's base name ("cdn.example.test" for `*.cdn.example.test`)."""
        state = self.zones.get(zone)
        if state is None or now - state.start >= self.window or now < state.start:
            if len(self.zones) >= self.max_zones:
                self._expire(now)
            state = self.zones[zone] = _Zone(now)
        why = tunneling_hint(qname)
        if len(state.names) <= self.per_minute:
            state.names.add(hash(qname))
            if len(state.names) > self.per_minute and not state.tripped:
                state.tripped = True
                why = (f"more than {self.per_minute} distinct names below *.{zone} within"
                       f" {self.window:.0f} s (DNS tunneling?)")
        elif why is None:
            why = (f"more than {self.per_minute} distinct names below *.{zone} within"
                   f" {self.window:.0f} s (DNS tunneling?)")
        if why is None:
            return None
        self.suspects += 1
        if state.reports >= self.report_per_minute:
            return None
        state.reports += 1
        return why

    def _expire(self, now: float) -> None:
        for key in [k for k, z in self.zones.items() if now - z.start >= self.window]:
            del self.zones[key]
        if len(self.zones) >= self.max_zones:  # all current: a flood of zones; start over
            self.zones.clear()


def zone_of(qname: str) -> str:
    """The zone a name is counted under when a rule allows every name: its last two labels
    (no public-suffix list: `a.b.co.uk` counts under co.uk, which only makes it louder)."""
    labels = qname.split(".")
    return ".".join(labels[-2:]) if len(labels) > 2 else qname
