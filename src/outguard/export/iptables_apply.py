"""`outguard apply --backend iptables`: load the iptables export into the kernel, and remove it.

Place in the data flow: policy → `compile.lower` → `export.iptables.render` → here → the tools
in `kernel.iptables`. Order, so that no packet ever meets a rule whose set is missing:

1. `ipset -exist restore` of the sets (named after their content, so a changed list is a new
   set and a live rule's set is never touched);
2. per family, one `iptables-restore --noflush` transaction that replaces outguard's chains,
   adds the jump from OUTPUT (FORWARD) only when it is not there yet, and deletes outguard's
   chains the new rules no longer use;
3. `ipset destroy` of outguard's sets nothing refers to any more.

IPv4 and IPv6 are two transactions (iptables has no `inet` table): between them, for a moment,
the new IPv4 rules run next to the old IPv6 ones. Nothing outside `OUTGUARD-*` chains, the
jumps to them and `og-*` sets is ever changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from outguard.compile.ir import Ruleset
from outguard.export.iptables import CHAIN_PREFIX, JUMPS, SET_PREFIX, render
from outguard.kernel import iptables as ipt
from outguard.kernel.iptables import Variant


@dataclass
class IptablesReport:
    variant: Variant
    chains: dict[int, list[str]]
    sets: list[str]
    removed_sets: list[str] = field(default_factory=list)


def _finish(text: str, version: int, saved: str, chains: list[str]) -> str:
    """The restore text for a kernel that already holds `saved`: no second jump, and the
    chains outguard no longer uses emptied and deleted."""
    lines = text.splitlines()
    for chain, hook in JUMPS.items():
        if ipt.has_rule(saved, f"-A {hook} -j {chain}"):
            lines = [ln for ln in lines if ln != f"-I {hook} 1 -j {chain}"]
    stale = [c for c in ipt.chains(saved, CHAIN_PREFIX) if c not in chains]
    commit = lines.index("COMMIT")
    tail = []
    for chain in stale:
        if chain in JUMPS and ipt.has_rule(saved, f"-A {JUMPS[chain]} -j {chain}"):
            tail.append(f"-D {JUMPS[chain]} -j {chain}")
    tail += [f"-X {c}" for c in stale]
    declare = [f":{c} - [0:0]" for c in stale]
    star = lines.index("*filter")
    lines = lines[:star + 1] + declare + lines[star + 1:commit] + tail + lines[commit:]
    return "\n".join(lines) + "\n"


def apply_ruleset(rs: Ruleset, variant: Variant = "default",
                  netns: str | None = None) -> IptablesReport:
    rendered = render(rs)
    ipt.ipset_restore(rendered.ipset, netns)
    for version, text in ((4, rendered.v4), (6, rendered.v6)):
        saved = ipt.save(version, variant, netns)
        ipt.restore(version, _finish(text, version, saved, rendered.chains[version]),
                    variant, netns)
    report = IptablesReport(variant, rendered.chains, rendered.sets)
    report.removed_sets = _drop_unused_sets(set(rendered.sets), netns)
    return report


def _drop_unused_sets(keep: set[str], netns: str | None) -> list[str]:
    removed = []
    for name in ipt.ipset_names(netns):
        if name.startswith(SET_PREFIX) and name not in keep:
            ipt.ipset_destroy(name, netns)
            removed.append(name)
    return removed


def remove(variant: Variant = "default", netns: str | None = None) -> list[str]:
    """Remove outguard's chains, their jumps and its sets; returns what was removed."""
    removed: list[str] = []
    for version in (4, 6):
        saved = ipt.save(version, variant, netns)
        mine = ipt.chains(saved, CHAIN_PREFIX)
        if not mine:
            continue
        lines = ["*filter", *(f":{c} - [0:0]" for c in mine)]
        lines += [f"-D {JUMPS[c]} -j {c}" for c in mine
                  if c in JUMPS and ipt.has_rule(saved, f"-A {JUMPS[c]} -j {c}")]
        lines += [f"-X {c}" for c in mine] + ["COMMIT"]
        ipt.restore(version, "\n".join(lines) + "\n", variant, netns)
        removed += [f"ipv{version} chain {c}" for c in mine]
    removed += [f"ipset {n}" for n in _drop_unused_sets(set(), netns)]
    return removed
