"""A lockdown in the nftables table: what `outguard lockdown --for 2h` adds to the output path.

Place in the data flow: part of compile (`nftables.nft` calls it when the state directory holds
a lockdown, `Lockdown`, which `apply.lockdown` writes). In the hook chains, right after
loopback, established connections and neighbour discovery:

    meta time < <until> jump lockdown          (comment: the expiry, for people)
    lockdown        [dns: the resolver's uid to its upstreams accept] · [jump deny]
                    · [jump keep] · goto v_lockdown
    keep            the kept allow rules, compiled as the allow section is (their own
                    counters count)
    v_lockdown      counter "lockdown" · log "og:lockdown" (per-flow limited) · drop

The expiry is the kernel's: `meta time` is compared with the lockdown's end on every new
connection, so the lockdown ends on time with no outguard process running (an apply after that
leaves the rule out). Deny rules and feeds still beat a kept allow rule, as they beat every allow
rule. In audit mode the lockdown still drops: it is an emergency brake, not an experiment.
Pure: data in, data out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outguard.events import render_prefix
from outguard.nftables.model import Compiled, NftRule, match, meta
from outguard.nftables.nft_verdict import Verdicts
from outguard.ruleset.keys import LOCKDOWN


@dataclass(frozen=True)
class Lockdown:
    """A lockdown: until when (whole seconds since the epoch, UTC: what `meta time` compares)
    and the names of the allow rules it keeps."""

    until: int
    keep: tuple[str, ...] = ()

    def active(self, now: float) -> bool:
        return now < self.until

    @property
    def until_text(self) -> str:
        return datetime.fromtimestamp(self.until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_json(self) -> dict[str, Any]:
        return {"until": self.until, "keep": list(self.keep)}

    @classmethod
    def from_json(cls, data: object) -> Lockdown:
        """ValueError for anything but what `to_json` writes."""
        if not isinstance(data, dict) or not isinstance(data.get("until"), int) \
                or isinstance(data.get("until"), bool):
            raise ValueError("a lockdown record needs an integer 'until'")
        keep = data.get("keep", [])
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise ValueError("a lockdown record's 'keep' is a list of rule names")
        return cls(int(data["until"]), tuple(keep))


def entry(lockdown: Lockdown) -> NftRule:
    """The hook chains' rule that sends new connections into the lockdown until it ends."""
    return NftRule([match(meta("time"), lockdown.until, "<"), {"jump": {"target": "lockdown"}}],
                   f"lockdown until {lockdown.until_text}")


def build(out: Compiled, verdicts: Verdicts, resolver: list[NftRule]) -> None:
    """The `lockdown` chain and its verdict into `out`, after the deny and keep sections were
    built (their chains are jumped to when they exist)."""
    chain = out.chain("lockdown")
    chain.rules.extend(resolver)
    for stage in ("deny", "keep"):
        # in audit mode a deny rule's verdict is accept: it would let its packets out of the
        # lockdown (which drops them all the same)
        if stage == "deny" and verdicts.blocked == "accept":
            continue
        if stage in out.chains:
            chain.rules.append(NftRule([{"jump": {"target": stage}}]))
    chain.rules.append(NftRule([{"goto": {"target": "v_lockdown"}}]))
    head = [NftRule([{"counter": LOCKDOWN.counter}])]
    if verdicts.blocked == "accept":
        # audit mode: the shared log gate accepts what it does not log; the lockdown drops
        # everything, logging at the policy's rate
        verdict = out.chain("v_lockdown")
        verdict.rules.extend(head)
        verdict.rules.append(NftRule([verdicts.limit(over=True), {"drop": None}]))
        log = {"prefix": render_prefix(str(LOCKDOWN), "drop"), "group": verdicts.rs.nflog_group}
        verdict.rules.append(NftRule([{"counter": LOCKDOWN.log_counter}, {"log": log},
                                      {"drop": None}]))
    else:
        verdicts.chain("v_lockdown", LOCKDOWN, head)
    out.counters += [LOCKDOWN.counter, LOCKDOWN.log_counter]
