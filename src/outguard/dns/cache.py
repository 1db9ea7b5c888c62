"""The answer cache and the record of what the kernel sets hold, both persisted across restarts.

Pure apart from `save`/`read`/`load` (one JSON file, written atomically by the agent from the
resolver process's `snapshot`). Times are wall-clock seconds
(`time.time()`), passed in, because they must survive a restart: the kernel's set entries keep
counting down while the agent is down.

`SetTracker.plan` is the rule that makes "the set holds the address before the answer leaves"
true for cache hits too: an answer is released only when each of its addresses stays in the
rule's set for at least max(TTL the client is given, min_ttl) more seconds; otherwise the entry
is (re)written with timeout max(TTL, min_ttl) + grace. So a hot name costs one kernel write per
address every `grace` seconds, not one per query.
"""

from __future__ import annotations

import base64
import json
import os
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outguard.dns.answers import Resolved, addresses
from outguard.dns.wire import Answer, WireError
from outguard.ruleset.ir import DnsSettings

if TYPE_CHECKING:
    from outguard.ruleset.names import NamePolicy

CacheKey = tuple[str, int, int, bool]
SetItem = tuple[str, str, int]  # (kernel set name, address, timeout in seconds)
FILE = "dns-cache.json"  # in the state directory: the agent saves it, `apply` reads it


@dataclass(frozen=True, slots=True)
class Entry:
    answer: Answer
    resolved: Resolved
    stored_at: float
    wire: bytes  # the upstream's message, for persistence


class AnswerCache:
    """Bounded by entries and by bytes (a TCP answer may be 64 KiB): oldest out first."""

    def __init__(self, max_entries: int = 20000, max_bytes: int = 32 << 20) -> None:
        self.entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.bytes = 0

    def get(self, key: CacheKey, now: float) -> tuple[Entry, int] | None:
        """The entry and its age in whole seconds, while it is fresh."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        age = int(now - entry.stored_at)
        if age >= entry.answer.ttl or age < 0:
            self._drop(key)
            return None
        return entry, age

    def put(self, key: CacheKey, entry: Entry) -> None:
        if entry.answer.ttl <= 0:
            return
        self._drop(key)
        self.entries[key] = entry
        self.bytes += len(entry.wire)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            _key, old = self.entries.popitem(last=False)
            self.bytes -= len(old.wire)

    def _drop(self, key: CacheKey) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.wire)


class SetTracker:
    """When each (set, address) written by us expires in the kernel."""

    def __init__(self) -> None:
        self.expiry: dict[tuple[str, str], float] = {}

    def plan(self, bases: tuple[str, ...], resolved: Resolved, age: int, settings: DnsSettings,
             now: float) -> list[SetItem]:
        items: list[SetItem] = []
        for base in bases:
            for suffix, addrs in (("_4", resolved.v4), ("_6", resolved.v6)):
                name = base + suffix
                for addr, ttl in addrs.items():
                    left = max(ttl - age, 0)
                    if self.expiry.get((name, addr), 0.0) < now + max(left, settings.min_ttl):
                        items.append((name, addr, settings.set_timeout(left)))
        return items

    def still_held_until(self, bases: tuple[str, ...], resolved: Resolved, age: int,
                         settings: DnsSettings) -> float:
        """The last moment at which `plan` (for this same `age`) still asks for no write."""
        until = float("inf")
        for base in bases:
            for suffix, addrs in (("_4", resolved.v4), ("_6", resolved.v6)):
                name = base + suffix
                for addr, ttl in addrs.items():
                    left = max(ttl - age, 0)
                    until = min(until, self.expiry.get((name, addr), 0.0) - max(left, settings.min_ttl))
        return until

    def written(self, items: list[SetItem], now: float) -> None:
        for name, addr, timeout in items:
            self.expiry[(name, addr)] = now + timeout

    def forget(self, items: list[SetItem]) -> None:
        for name, addr, _t in items:
            self.expiry.pop((name, addr), None)

    def prune(self, now: float) -> None:
        for key in [k for k, v in self.expiry.items() if v <= now]:
            del self.expiry[key]


class RecentNames:
    """Which names resolved to an address lately: the monitor's `names_of(dst)`.

    A name counts for `window` seconds after an answer gave the address, or for the address's
    TTL if longer (clients may use an answer that long), plus `extra` (the agent's copy, told
    only of upstream answers, adds the TTL: cache hits may come that much later). Bounded: past
    `max_addresses` the oldest addresses are forgotten first, and an address keeps its
    `max_names` latest names (a wildcard's endless distinct names all point at one address)."""

    def __init__(self, window: float = 3600.0, max_addresses: int = 100_000,
                 max_names: int = 32) -> None:
        self.window, self.max_addresses, self.max_names = window, max_addresses, max_names
        self.by_addr: OrderedDict[str, dict[str, float]] = OrderedDict()

    def record(self, resolved: Resolved, now: float, extra: bool = False) -> None:
        for addrs in (resolved.v4, resolved.v6):
            for addr, ttl in addrs.items():
                until = now + max(self.window, ttl) + (ttl if extra else 0)
                names = self.by_addr.get(addr)
                if names is None:
                    names = self.by_addr[addr] = {}
                else:
                    self.by_addr.move_to_end(addr)
                for name in resolved.chain:
                    names[name] = max(names.pop(name, 0.0), until)  # re-inserted: newest last
                while len(names) > self.max_names:
                    del names[next(iter(names))]
        while len(self.by_addr) > self.max_addresses:
            self.by_addr.popitem(last=False)

    def names_of(self, addr: str, now: float) -> tuple[str, ...]:
        """Names (question name first, then CNAME targets) still counting for `addr`."""
        names = self.by_addr.get(addr)
        if not names:
            return ()
        return tuple(n for n, until in names.items() if until > now)

    def prune(self, now: float) -> None:
        for addr in list(self.by_addr):
            names = self.by_addr[addr]
            for name in [n for n, until in names.items() if until <= now]:
                del names[name]
            if not names:
                del self.by_addr[addr]


def entry_of(wire: bytes, qname: str, stored_at: float) -> Entry:
    """Cache entry of an upstream message (WireError/ValueError if it does not decode)."""
    answer = Answer.parse(wire)
    resolved = addresses(wire, qname) if answer.counts[0] else Resolved({}, {}, (qname,))
    return Entry(answer, resolved, stored_at, wire)


def snapshot(cache: AnswerCache, tracker: SetTracker, now: float) -> dict[str, Any]:
    """The cache and the tracker (only what is still alive) as plain data."""
    return {
        "version": 1,
        "saved_at": now,
        "answers": [[k[0], k[1], k[2], k[3], e.stored_at, base64.b64encode(e.wire).decode()]
                    for k, e in cache.entries.items() if now - e.stored_at < e.answer.ttl],
        "sets": [[s, a, exp] for (s, a), exp in tracker.expiry.items() if exp > now],
    }


def save(path: Path, data: dict[str, Any]) -> None:
    """Write a `snapshot` atomically, 0600."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read(path: Path) -> Any:
    """What `save` wrote, undecoded; None when missing or damaged."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def restore(data: Any, now: float) -> tuple[AnswerCache, SetTracker]:
    """A `snapshot`; anything damaged gives an empty cache (a cold start)."""
    cache, tracker = AnswerCache(), SetTracker()
    if not isinstance(data, dict) or data.get("version") != 1:
        return cache, tracker
    for row in data.get("answers", []):
        try:
            qname, qtype, qclass, do, stored_at, b64 = row
            entry = entry_of(base64.b64decode(b64), str(qname), float(stored_at))
        except (ValueError, TypeError, WireError):
            continue
        if now - entry.stored_at < entry.answer.ttl:
            cache.put((str(qname), int(qtype), int(qclass), bool(do)), entry)
    for row in data.get("sets", []):
        try:
            name, addr, exp = row
            if float(exp) > now:
                tracker.expiry[(str(name), str(addr))] = float(exp)
        except (ValueError, TypeError):
            continue
    return cache, tracker


def load(path: Path, now: float) -> tuple[AnswerCache, SetTracker]:
    """The cache file at `path` (`read` + `restore`)."""
    return restore(read(path), now)


def prefill(data: Any, names: NamePolicy, settings: DnsSettings, new_sets: Collection[str],
            now: float) -> list[SetItem]:
    """What the rules' new FQDN sets (`new_sets`, named `f_<hash>_4`/`_6`) hold from the start,
    so that a rule that gains a name does not lose the addresses its other names resolved to
    (clients keep using an answer without asking again): every answer of a saved cache
    (`snapshot`) whose name the new policy (`names`) lets resolve into one of them, with the
    time its old set entry still had: max(TTL, min_ttl) + grace, less the answer's age."""
    if not isinstance(data, dict) or data.get("version") != 1 or not new_sets:
        return []
    wanted = set(new_sets)
    items: dict[tuple[str, str], int] = {}
    for row in data.get("answers", []):
        try:
            qname, _qtype, _qclass, _do, stored_at, b64 = row
            entry = entry_of(base64.b64decode(b64), str(qname), float(stored_at))
        except (ValueError, TypeError, WireError):
            continue
        verdict = names.lookup(str(qname))
        if verdict.action != "resolve":
            continue
        age = now - entry.stored_at
        for base in verdict.sets:
            for suffix, addrs in (("_4", entry.resolved.v4), ("_6", entry.resolved.v6)):
                if base + suffix not in wanted:
                    continue
                for addr, ttl in addrs.items():
                    left = int(max(ttl, settings.min_ttl) + settings.grace - age)
                    if left > 0:
                        key = (base + suffix, addr)
                        items[key] = max(items.get(key, 0), left)
    return [(name, addr, left) for (name, addr), left in items.items()]
