"""A tiny evaluator of the nftables vocabulary `outguard.nftables.nft` emits, for pure tests.

It walks a `Compiled` table the way the kernel walks `inet outguard` for one packet: base chain,
`jump`/`goto`, verdict maps, named sets (hash and interval), and the matches outguard uses. It
records the named counters hit and the log prefixes written, so tests can check that the compiled
ruleset means what `decide` says — without root or a kernel. Anything it does not know raises,
so a new construct in the compiler shows up here instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from outguard.nftables.model import Compiled, NftSet
from outguard.policy.addresses import parse_ip
from outguard.policy.targets import text_to_int
from outguard.ruleset.intervals import net_to_range

Proto = Literal["tcp", "udp", "icmp", "other"]


@dataclass(frozen=True)
class Packet:
    """The first packet of a new outbound flow, as the output (or forward) hook sees it."""

    dst: str
    proto: Proto = "tcp"
    port: int | None = None
    uid: int | None = None
    gid: int | None = None
    cgroup: str | None = None
    oif: str = "eth0"
    ct_state: str = "new"
    now: datetime | None = None
    mark: int = 0  # the socket's mark (outguard verify's probes: keys.PROBE_MARK)

    @property
    def l4proto(self) -> str:
        if self.proto == "icmp":
            return "icmp" if self.version == 4 else "ipv6-icmp"
        return self.proto

    @property
    def version(self) -> int:
        parsed = parse_ip(self.dst)
        if parsed is None:
            raise ValueError(f"{self.dst!r} is not an address")
        return parsed[1]


@dataclass
class Outcome:
    verdict: str = "accept"  # the base chain's policy when nothing decides
    reject_type: str | None = None
    counters: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    held: bool = False  # the first packet was held back (reject: dropped, its retransmit reset)


class _Verdict(Exception):
    def __init__(self, verdict: str) -> None:
        self.verdict = verdict


class _NoMatch(Exception):
    """The rule does not match: on to the next rule of the chain."""


class _Return(Exception):
    """A `goto` came back (or a `return`): the chain is finished, back to its caller."""


class _Held(Exception):
    """`add @set {...} drop`: a first packet held back; its retransmit decides the flow."""


def _elem_range(elem: Any, version: int) -> tuple[int, int]:
    if isinstance(elem, str):
        value = text_to_int(elem, version)
        return value, value
    if isinstance(elem, dict) and "prefix" in elem:
        return net_to_range(f"{elem['prefix']['addr']}/{elem['prefix']['len']}", version)
    if isinstance(elem, dict) and "range" in elem:
        low, high = elem["range"]
        return text_to_int(low, version), text_to_int(high, version)
    raise ValueError(f"unknown set element {elem!r}")


def _port_in(port: int, right: Any, sets: dict[str, NftSet] | None = None) -> bool:
    if isinstance(right, str) and right.startswith("@") and sets is not None and right[1:] in sets:
        named = sets[right[1:]]
        if named.key_type != "inet_service" or not named.interval:
            raise ValueError(f"port set {right!r} is not an interval set of inet_service")
        return any(_port_in(port, item) for item in named.elements())
    if isinstance(right, int):
        return port == right
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return bool(low <= port <= high)
    if isinstance(right, dict) and "set" in right:
        return any(_port_in(port, item) for item in right["set"])
    raise ValueError(f"unknown port value {right!r}")


class Evaluator:
    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self._elements: dict[str, list[Any]] = {}
        # what the packet path put into the dynamic sets (log limits, first SYNs)
        self.dynamic: dict[str, set[tuple[Any, ...]]] = {}

    def _key(self, concat: list[dict[str, Any]], pkt: Packet) -> tuple[Any, ...] | None:
        """The packet's value of a concatenation; None when a part is missing (no match)."""
        out: list[Any] = []
        for part in concat:
            if "payload" in part:
                protocol, fld = part["payload"]["protocol"], part["payload"]["field"]
                if protocol in ("ip", "ip6"):
                    if not self._left_daddr(protocol, pkt):
                        return None
                    out.append(pkt.dst if fld == "daddr" else "src")
                elif protocol == "th" and pkt.proto in ("tcp", "udp"):
                    out.append(pkt.port if fld == "dport" else 40000)
                else:
                    raise ValueError(f"unknown key part {part}")
            elif part.get("meta", {}).get("key") == "skuid":
                if pkt.uid is None:
                    return None
                out.append(pkt.uid)
            elif part.get("meta", {}).get("key") == "l4proto":
                out.append(pkt.l4proto)
            else:
                raise ValueError(f"unknown key part {part}")
        return tuple(out)

    def _dynamic(self, ref: str) -> set[tuple[Any, ...]]:
        s = self._set(ref)
        if s.element_timeout is None:
            raise ValueError(f"{ref} is not a set the packet path fills")
        return self.dynamic.setdefault(s.name, set())

    def elements(self, name: str) -> list[Any]:
        if name not in self._elements:
            self._elements[name] = self.compiled.sets[name].elements()
        return self._elements[name]

    def _set(self, ref: str) -> NftSet:
        if not ref.startswith("@") or ref[1:] not in self.compiled.sets:
            raise ValueError(f"unknown set reference {ref!r}")
        return self.compiled.sets[ref[1:]]

    def _lookup(self, s: NftSet, pkt: Packet) -> Any:
        """The map value (or True for a set) for the packet's destination; None when absent."""
        value, version = parse_ip(pkt.dst) or (0, 0)
        for elem in self.elements(s.name):
            key, data = (elem[0], elem[1]) if s.verdict_map else (elem, True)
            low, high = _elem_range(key, version)
            if not s.interval and low != high:
                raise ValueError(f"range {key!r} in the hash set {s.name}")
            if low <= value <= high:
                return data
        return None

    def _left_daddr(self, protocol: str, pkt: Packet) -> bool:
        """False when the packet is not of the family the expression needs (no match)."""
        return (protocol == "ip" and pkt.version == 4) or (protocol == "ip6" and pkt.version == 6)

    def _match(self, body: dict[str, Any], pkt: Packet) -> bool:
        left, right, op = body["left"], body["right"], body["op"]
        if "concat" in left:
            key = self._key(left["concat"], pkt)
            return key is not None and key in self._dynamic(right)
        if "meta" in left:
            key = left["meta"]["key"]
            if key == "oif":
                return bool(op == "==" and pkt.oif == right)
            if key == "l4proto":
                wanted = right["set"] if isinstance(right, dict) else [right]
                return pkt.l4proto in wanted
            if key == "skuid":
                return pkt.uid is not None and pkt.uid == right
            if key == "skgid":
                return pkt.gid is not None and pkt.gid == right
            if key == "mark":
                return bool(op == "==" and pkt.mark == right)
            if key == "time":
                if op != "<" or pkt.now is None:
                    raise ValueError(f"meta time needs op '<' and a packet time: {body}")
                # nft reads the number as seconds and compares nanoseconds
                return int(pkt.now.timestamp() * 1_000_000_000) < int(right) * 1_000_000_000
            raise ValueError(f"unknown meta key {key!r}")
        if "ct" in left:
            if left["ct"]["key"] != "state" or op != "in":
                raise ValueError(f"unknown ct match {body}")
            return pkt.ct_state in right
        if "payload" in left:
            protocol, fld = left["payload"]["protocol"], left["payload"]["field"]
            if fld == "daddr":
                if not self._left_daddr(protocol, pkt):
                    return False
                if op != "==":
                    raise ValueError(f"unknown daddr op {body}")
                if isinstance(right, str) and not right.startswith("@"):
                    # one address, as written (the resolver's upstream with `dns:`)
                    return parse_ip(right) == parse_ip(pkt.dst)
                return self._lookup(self._set(right), pkt) is not None
            if fld == "dport":
                if protocol in ("tcp", "udp") and pkt.proto != protocol:
                    return False
                if protocol == "th" and pkt.proto not in ("tcp", "udp"):
                    raise ValueError("`th dport` without an l4proto check before it")
                if protocol not in ("tcp", "udp", "th"):
                    raise ValueError(f"unknown dport protocol {protocol!r}")
                return pkt.port is not None and _port_in(pkt.port, right, self.compiled.sets)
            if protocol == "icmpv6" and fld == "type":
                return False  # the tests send no neighbour discovery
            raise ValueError(f"unknown payload {left}")
        if "socket" in left:
            if left["socket"]["key"] != "cgroupv2" or pkt.cgroup is None:
                return False
            level = left["socket"]["level"]
            parts = pkt.cgroup.strip("/").split("/")
            # a cgroup set (`@c_…`) holds the paths of the cgroups it matches
            paths = self.compiled.sets[right[1:]].elements() if right.startswith("@") \
                else [right]
            return bool(len(parts) >= level and "/".join(parts[:level]) in paths)
        raise ValueError(f"unknown match {body}")

    def _chain(self, name: str, pkt: Packet, out: Outcome, depth: int = 0) -> None:
        """Run a chain; raises _Verdict for a final verdict, returns when it falls off the end."""
        if depth > 16:
            raise ValueError("chain loop")
        if name not in self.compiled.chains:
            raise ValueError(f"jump to a chain that does not exist: {name!r}")
        out.chains.append(name)
        for rule in self.compiled.chains[name].rules:
            try:
                self._rule(rule.expr, pkt, out, depth)
            except _NoMatch:
                continue
            except _Return:
                return

    def _rule(self, exprs: list[dict[str, Any]], pkt: Packet, out: Outcome, depth: int) -> None:
        for expr in exprs:
            ((kind, body),) = expr.items()
            if kind == "match":
                if not self._match(body, pkt):
                    raise _NoMatch
            elif kind == "counter":
                if not isinstance(body, str):
                    raise ValueError(f"anonymous counter {expr}: counters must be named per rule")
                if body not in self.compiled.counters:
                    raise ValueError(f"counter {body!r} is not declared")
                out.counters.append(body)
            elif kind == "limit":
                # the tests send one packet per flow: always under the rate
                if body.get("inv"):
                    raise _NoMatch  # `limit rate over` matches only above it
            elif kind == "set":
                # `update` or `add`: the element is there now; its limit, as above
                key = self._key(body["elem"]["concat"], pkt)
                if key is None:
                    raise _NoMatch
                self._dynamic(body["set"]).add(key)
                if any(e.get("limit", {}).get("inv") for e in body.get("stmt", [])):
                    raise _NoMatch
                if body["op"] == "add" and exprs[-1] == {"drop": None}:
                    raise _Held
            elif kind == "return":
                raise _Return
            elif kind == "log":
                out.logs.append(body["prefix"])
            elif kind in ("accept", "drop"):
                raise _Verdict(kind)
            elif kind == "reject":
                out.reject_type = body["type"]
                raise _Verdict("reject")
            elif kind == "jump":
                self._chain(body["target"], pkt, out, depth + 1)
            elif kind == "goto":
                self._chain(body["target"], pkt, out, depth + 1)
                raise _Return
            elif kind == "vmap":
                key = body["key"]["payload"]
                if not self._left_daddr(key["protocol"], pkt):
                    raise _NoMatch
                data = self._lookup(self._set(body["data"]), pkt)
                if data is None:
                    raise _NoMatch
                ((verb, target),) = data.items()
                self._chain(target["target"], pkt, out, depth + 1)
                if verb == "goto":
                    raise _Return
            else:
                raise ValueError(f"unknown expression {expr}")

    def run(self, pkt: Packet, hook: str = "output") -> Outcome:
        out = Outcome()
        base = [c for c in self.compiled.chains.values() if c.hook == hook]
        if len(base) != 1:
            raise ValueError(f"expected one base chain for {hook}, found {len(base)}")
        try:
            self._chain(base[0].name, pkt, out)
        except _Verdict as verdict:
            out.verdict = verdict.verdict
        except _Held:
            # the held first packet is counted and logged; the retransmit gets the verdict
            again = self.run(pkt, hook)
            out.verdict, out.reject_type, out.held = again.verdict, again.reject_type, True
        return out
