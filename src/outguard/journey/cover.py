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
from dataclasses import dataclass

Owner = dict[str, str | int] | None


@dataclass(frozen=True)
class Shape:
    """What a rule allows: for whom, to where, which protocol, which ports ([] = any)."""

    owner: Owner
    to: tuple[str, ...]
    proto: str  # tcp | udp | icmp | any
    ports: tuple[tuple[int, int], ...]


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
    if not all(any(entry_covers(o, i) for o in outer.to) for i in inner.to):
        return False
    protos = ("tcp", "udp") if inner.proto == "any" and inner.ports else \
        ("tcp", "udp", "icmp", "other") if inner.proto == "any" else (inner.proto,)
    if not inner.ports:
        return all(proto_covers(outer, p, None) for p in protos)
    return all(_ports_within(outer, p, inner.ports) for p in protos)


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


def covering(shapes: Sequence[Shape], owner: Owner, entry: str, proto: str,
             port: int | None) -> int | None:
    """The index of the first shape that allows `entry` on `proto`/`port` to `owner`."""
    for i, shape in enumerate(shapes):
        if owner_covers(shape.owner, owner) and proto_covers(shape, proto, port) and \
                any(entry_covers(o, entry) for o in shape.to):
            return i
    return None


def redundant(shapes: Sequence[Shape]) -> dict[int, int]:
    """Index of a rule another allows wholly → the index of the one that does. Of rules that
    cover each other (the same rule twice), the first stays; a rule that goes never covers."""
    out: dict[int, int] = {}
    for i, inner in enumerate(shapes):
        for j, outer in enumerate(shapes):
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
