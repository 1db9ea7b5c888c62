"""The nftables table `inet outguard` as data: sets, chains, rules and their expressions, and
nftables' JSON for addresses and ranges.

Place in the data flow: `nft` builds a `Compiled` from the IR (with `nft_verdict` for the
verdict chains), `nft_tx` turns it into transactions, `nft_text` into `nft -f` text; the state
directory keeps list sets' elements in the JSON form made here. Pure data and small builders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from outguard.policy.addresses import BITS
from outguard.policy.targets import int_to_text
from outguard.ruleset.intervals import addr_texts
from outguard.ruleset.keys import TABLE as TABLE_ID

Expr = dict[str, Any]
FAMILY, TABLE = TABLE_ID  # `inet outguard`: the one table outguard owns
BASE_CHAINS = ("output", "forward", "input")  # the chains on a hook, each named after its hook
ADDR = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}


@dataclass
class NftSet:
    name: str
    key_type: str | tuple[str, ...]  # a tuple: a concatenation (`ipv4_addr . inet_service`)
    interval: bool
    verdict_map: bool
    _elements: Callable[[], list[Any]] = field(repr=False)
    size_hint: int = 0
    timeout: bool = False  # filled at run time (by the DNS resolver), entries expire
    # Content-named and never changed once made (a policy list; not a feed, which is synced in
    # place): declared with its size, so the kernel can pick its fixed-size hash for it.
    fixed: bool = False
    # A feed's set: its elements as integers (addresses, or closed ranges), which apply
    # loads over netlink; and, for a hash set, the capacity apply declares it with (a
    # fixed-size hash takes a 450k load in 0.37 s where a growing one needs 0.95 s).
    bulk: Callable[[], list[int] | list[tuple[int, int]]] | None = field(default=None, repr=False)
    version: int = 4
    capacity: int | None = None
    # A cgroup set (`socket cgroupv2 level N @c_…`): the cgroup path it stands for. Apply
    # fills it with that cgroup when it exists (the kernel matches the cgroup's 64-bit id,
    # bound when the element is added); empty, it matches nothing: a unit that is not running
    # makes no batch fail. Refilled at every apply: a restarted unit has a new cgroup.
    cgroup: str | None = None
    # The kernel's own state (the per-flow log limits): created with this default element
    # timeout (seconds) and `capacity`, filled by the packet path only, never by outguard.
    element_timeout: int | None = None

    def elements(self) -> list[Any]:
        return self._elements()


@dataclass
class NftRule:
    expr: list[Expr]
    comment: str | None = None


@dataclass
class NftChain:
    name: str
    hook: str | None = None  # "output" / "forward" for base chains
    rules: list[NftRule] = field(default_factory=list)
    kind: str = "filter"  # a base chain's type: filter, or nat (`nft_proxy.NAT_CHAIN`)
    prio: int = 0


@dataclass
class Compiled:
    counters: list[str] = field(default_factory=list)
    sets: dict[str, NftSet] = field(default_factory=dict)
    chains: dict[str, NftChain] = field(default_factory=dict)
    needs_text: bool = False  # JSON of nft 1.0.6 cannot express `socket cgroupv2`

    def chain(self, name: str, hook: str | None = None) -> NftChain:
        if name not in self.chains:
            self.chains[name] = NftChain(name, hook)
        return self.chains[name]


def match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}



def const(value: list[Any]) -> Callable[[], list[Any]]:
    return lambda: value


def int_elements(items: Sequence[int] | Sequence[tuple[int, int]], version: int,
                 interval: bool) -> list[Any]:
    """nftables JSON elements of a set given as integers: addresses, or closed ranges."""
    if not interval:
        return addr_texts(items, version)  # type: ignore[arg-type]
    return [range_elem(a, b, version) for a, b in items]  # type: ignore[misc]


def range_elem(first: int, last: int, version: int) -> Any:
    """The nftables JSON key for a range: a prefix when it is one, else a range."""
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        length = BITS[version] - (size.bit_length() - 1)
        if length == BITS[version]:
            return int_to_text(first, version)
        return {"prefix": {"addr": int_to_text(first, version), "len": length}}
    return {"range": [int_to_text(first, version), int_to_text(last, version)]}
