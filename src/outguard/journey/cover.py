"""Which suggested rule covers which: `suggest` writes no rule another of its rules allows.

Place in the data flow: `suggest` builds its rules per service (`suggest._rules`), then asks
here (a) which destinations of an unattributed service ("uid:N": a short-lived socket the
learner found no process for) a process rule of the same user already allows, and (b) which
whole rules another rule allows. Pure: shapes in, answers out.

The meaning is the policy's: `*.d` allows every name below `d` (not `d` itself); `proto: any`
with ports means TCP and UDP on those ports (ICMP not); no `ports` means every port; no `for:`
means every user and unit. A rule covers another when every flow the second allows, the first
allows too: its `for:` is none or the same, its `to` takes every entry, its protocol and ports
take every protocol and port.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Owner = dict[str, str | int] | None


@dataclass(frozen=True)
class Shape:
    """What a rule allows: for whom, to where, which protocol, which ports ([] = any)."""

    owner: Owner
    to: tuple[str, ...]
    proto: str  # tcp | udp | icmp | any
    ports: tuple[tuple[int, int], ...]
    # the entries as a set, and the domains of its wildcards: a rule of 400 names is asked
    # about another's 400 in 400 lookups, not 160,000 comparisons
    exact: frozenset[str] = field(init=False, repr=False, compare=False)
    wild: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exact", frozenset(self.to))
        object.__setattr__(self, "wild", frozenset(t[2:] for t in self.to if t.startswith("*.")))

    def takes(self, entry: str) -> bool:
        """Whether one of its entries takes every flow `entry` takes (`entry_covers`)."""
        if entry in self.exact:
            return True
        if not self.wild:
            return False
        parts = entry.removeprefix("*.").split(".")
        return any(".".join(parts[k:]) in self.wild for k in range(1, len(parts)))


def entry_covers(outer: str, inner: str) -> bool:
    """Whether the `to` entry `outer` takes every flow `inner` takes (names and addresses as
    `suggest` writes them: single addresses, names, `*.domain` wildcards)."""
    if outer == inner:
        return True
    if not outer.startswith("*."):
        return False
    domain = outer[2:]
    return inner.removeprefix("*.").endswith("." + domain)


def owner_covers(outer: Owner, inner: Owner) -> bool:
    """No `for:` is everyone's; otherwise only the same `for:` (a unit and a user are not
    comparable: a flow of the user may run outside the unit)."""
    return outer is None or outer == inner


def proto_covers(outer: Shape, proto: str, port: int | None) -> bool:
    """Whether `outer` allows `proto` (tcp, udp, icmp, other) on `port` (None: every port, or
    a protocol without ports)."""
    if outer.proto not in ("any", proto):
        return False
    if not outer.ports:
        return True
    if proto not in ("tcp", "udp") or port is None:
        return False  # ports mean TCP and UDP; a portless need is every port
    return any(lo <= port <= hi for lo, hi in outer.ports)


def covers(outer: Shape, inner: Shape) -> bool:
    """Whether every flow `inner` allows, `outer` allows."""
    if not owner_covers(outer.owner, inner.owner):
        return False
    protos = ("tcp", "udp") if inner.proto == "any" and inner.ports else \
        ("tcp", "udp", "icmp", "other") if inner.proto == "any" else (inner.proto,)
    if not inner.ports:
        if not all(proto_covers(outer, p, None) for p in protos):
            return False
    elif not all(_ports_within(outer, p, inner.ports) for p in protos):
        return False
    return all(outer.takes(i) for i in inner.to)


def _ports_within(outer: Shape, proto: str, ports: Iterable[tuple[int, int]]) -> bool:
    if outer.proto not in ("any", proto):
        return False
    if not outer.ports:
        return True
    return all(_range_within(lo, hi, outer.ports) for lo, hi in ports)


def _range_within(lo: int, hi: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether [lo, hi] lies in the union of `ranges` (suggest's ranges never overlap)."""
    port = lo
    for a, b in sorted(ranges):
        if a <= port <= b:
            port = b + 1
            if port > hi:
                return True
    return False


class Index:
    """Shapes found by the entries they take: only those are compared (a learned table of
    50 services x 400 destinations makes 20,000 shapes)."""

    def __init__(self, shapes: Sequence[Shape]) -> None:
        self.shapes = shapes
        self.exact: dict[str, list[int]] = {}
        self.wild: dict[str, list[int]] = {}
        for j, shape in enumerate(shapes):
            for entry in shape.exact:
                self.exact.setdefault(entry, []).append(j)
            for domain in shape.wild:
                self.wild.setdefault(domain, []).append(j)

    def taking(self, entry: str) -> list[int]:
        """The indexes of the shapes that take `entry`, in order."""
        found = set(self.exact.get(entry, ()))
        parts = entry.removeprefix("*.").split(".")
        for k in range(1, len(parts)):
            found.update(self.wild.get(".".join(parts[k:]), ()))
        return sorted(found)

    def covering(self, owner: Owner, entry: str, proto: str, port: int | None) -> int | None:
        """The index of the first shape that allows `entry` on `proto`/`port` to `owner`."""
        for i in self.taking(entry):
            shape = self.shapes[i]
            if owner_covers(shape.owner, owner) and proto_covers(shape, proto, port):
                return i
        return None


def redundant(shapes: Sequence[Shape]) -> dict[int, int]:
    """Index of a rule another allows wholly → the index of the one that does. Of rules that
    cover each other (the same rule twice), the first stays; a rule that goes never covers."""
    out: dict[int, int] = {}
    index = Index(shapes)
    for i, inner in enumerate(shapes):
        if not inner.to:
            continue
        for j in index.taking(inner.to[0]):  # only these can cover it
            outer = shapes[j]
            if i == j or j in out or not covers(outer, inner):
                continue
            if j > i and covers(inner, outer):
                continue  # the same allowance: the later one goes, when its turn comes
            out[i] = j
            break
    for i, went_for in out.items():  # one that went for one that went later: the one that stays
        stays = went_for
        while stays in out:
            stays = out[stays]
        out[i] = stays
    return out
