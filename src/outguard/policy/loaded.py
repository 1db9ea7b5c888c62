"""A loaded policy, as every later step takes it: the validated document, its lists, where it
came from, its warnings.

Place in the data flow: `load` makes a `Policy`; `lint`, `host`, `ruleset.lower`, the feeds
(a feed is a `LoadedList`) and everything after them take it. Types only: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from outguard.errors import Problem
from outguard.policy.model import PolicyDoc, Rule
from outguard.policy.targets import Target
from outguard.policy.yamlpos import Positions


def format_path(path: Iterable[str | int]) -> str:
    """`("allow", 3, "to", 1)` → `allow[3].to[1]`: a place in the document, for people."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class LoadedList:
    """A named list: inline entries, or a file read (and parsed only when someone needs it)."""

    name: str
    digest: str
    file: str | None
    _read: Callable[[], list[Target]] = field(repr=False)

    @cached_property
    def targets(self) -> list[Target]:
        return self._read()


@dataclass
class Policy:
    """A loaded, valid policy: the document plus its lists, where it came from and its warnings."""

    doc: PolicyDoc
    lists: dict[str, LoadedList]
    source: str
    text: str
    digest: str
    warnings: list[Problem] = field(default_factory=list)
    positions: Positions = field(default_factory=Positions)

    def rules(self) -> list[tuple[str, int, Rule]]:
        """Every rule with its section and index, deny first (the order they are evaluated)."""
        return ([("deny", i, r) for i, r in enumerate(self.doc.deny)]
                + [("allow", i, r) for i, r in enumerate(self.doc.allow)])
