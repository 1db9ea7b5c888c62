"""`explain --to ADDRESS` with `dns:`: the names whose answers put the address in a rule's set.

Place in the data flow: the agent's resolver writes the kernel's FQDN sets and keeps what it
wrote, saved to the state directory (`dns-cache.json`, every 30 s and when it stops:
`dns.cache.snapshot`: the live (set, address, expiry) entries and the answers). Here that file
is read, never written: the live entries for ADDRESS name the rules whose sets hold it, the
saved answers the names it was the answer for. `explain` then asks `decide()` with the address
AND the name — what the kernel's set match means — so it never says DENY for an address the
kernel lets out through a name rule. Pure but for reading the file.

What it cannot see: an entry written after the last save (up to 30 s), and a name whose
answer aged out of the saved cache while its set entry lives on (then the rule's first plain
name stands for it; a rule of wildcards only is named by none and left out).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outguard.policy.addresses import packet_address
from outguard.ruleset.index import index_of, normalize
from outguard.ruleset.ir import Ruleset


@dataclass(frozen=True)
class InSet:
    """An address the resolver put into a rule's set, for a name, until a moment."""

    name: str  # the DNS name answered with the address
    rule: str  # the rule whose set holds it (`allow:curl`)
    set_name: str  # the kernel set (`f_<hash>_4`)
    until: float  # wall-clock seconds: when the kernel drops it unless it is answered again
    source: str  # the file it was read from, and when that was saved


def _answered(data: dict[str, Any], address: tuple[int, int]) -> list[str]:
    """The names whose saved answers hold `address` (CNAME chains: the name asked)."""
    from outguard.dns.cache import entry_of  # noqa: PLC0415 - only policies with `dns:`
    from outguard.dns.wire import WireError  # noqa: PLC0415

    names: dict[str, None] = {}
    for row in data.get("answers", []):
        try:
            qname, _qtype, _qclass, _do, stored_at, b64 = row
            entry = entry_of(base64.b64decode(b64), str(qname), float(stored_at))
        except (ValueError, TypeError, WireError):
            continue
        got = {*entry.resolved.v4, *entry.resolved.v6}
        if any(packet_address(a) == address for a in got):
            names[str(qname).lower().rstrip(".")] = None
    return list(names)


def in_sets(ruleset: Ruleset, data: Any, address: str, now: float,
            source: str = "the saved resolver state") -> list[InSet]:
    """Where the resolver's saved state (`dns.cache.snapshot`) has `address` in a rule's set
    at `now`, with the names it came for; [] without `dns:` or such an entry."""
    want = packet_address(address)
    if ruleset.dns is None or want is None or not isinstance(data, dict) or \
            data.get("version") != 1:
        return []
    live: dict[str, tuple[str, float]] = {}  # set base → (set name, expiry)
    for row in data.get("sets", []):
        try:
            set_name, addr, expiry = str(row[0]), str(row[1]), float(row[2])
        except (IndexError, TypeError, ValueError):
            continue
        if expiry > now and packet_address(addr) == want:
            base = set_name.rsplit("_", 1)[0]
            if expiry > live.get(base, ("", 0.0))[1]:
                live[base] = (set_name, expiry)
    if not live:
        return []
    answered = _answered(data, want)
    index = index_of(ruleset)
    out: list[InSet] = []
    for rule in ruleset.rules():
        if rule.fqdn_set is None or rule.fqdn_set not in live:
            continue
        set_name, until = live[rule.fqdn_set]
        names = [n for n in answered if index.names(rule, normalize(n))] or list(rule.names[:1])
        out += [InSet(n, rule.counter, set_name, until, source) for n in names]
    return out


def read_in_sets(ruleset: Ruleset, state_dir: Path, address: str, now: float) -> list[InSet]:
    """`in_sets` from the state directory's saved resolver state (missing: [])."""
    from outguard.dns import cache as dcache  # noqa: PLC0415 - only policies with `dns:`

    if ruleset.dns is None:
        return []
    path = state_dir / dcache.FILE
    data = dcache.read(path)
    if not isinstance(data, dict):
        return []
    saved = data.get("saved_at")
    when = f", saved {_iso(float(saved))}" if isinstance(saved, int | float) else ""
    return in_sets(ruleset, data, address, now, f"{path}{when}")


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def until_text(s: InSet) -> str:
    return _iso(s.until)
