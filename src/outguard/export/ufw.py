"""IR → the `ufw` commands that build the same egress policy, as a shell script.

Place in the data flow: `ruleset.lower` makes the IR; `fit` says what ufw can enforce of it
(and how faithfully), `export` renders that as commands. ufw keeps its user rules in the order
they were added and evaluates them first match wins, after its own before.rules (loopback and
established traffic accepted, as outguard does), so the script adds the deny rules, then the
allow rules, in policy order, and sets the default last: run on a live machine, nothing is
blocked before the allow rules exist. Two rules ufw would see as the same match are added once
(ufw would silently turn the second into an update of the first); the second could never
decide anyway, since the first matches the same packets.

ufw has no sets, no owner match, no expiry, no ICMP rules and logs through its own LOG target;
each such difference is in the fidelity report. A list becomes one rule per address: large
lists get a warning that says what to do instead.
"""

from __future__ import annotations

import shlex

from outguard.export.common import (
    check_addr,
    dns_warnings,
    effective,
    has_destination,
    name_notes,
    safe_name,
    utc_text,
    without,
)
from outguard.export.fidelity import Export, RuleFidelity
from outguard.ruleset.ir import IRRule, Ruleset

# What the ufw kernel test measured: ufw's REJECT for IPv6 sends ICMPv6 port-unreachable
# even for TCP, and a local TCP connect() never sees it (it times out as after a drop).
REJECT_NOTE = ("rejected with ICMP port-unreachable, not admin-prohibited; IPv6 TCP too, so a "
               "local IPv6 TCP connect waits as if dropped instead of failing at once")
PORT_SLOTS = 15  # ufw's multiport limit; a range takes two
RULE_WARN = 50  # one policy rule becoming more ufw rules than this gets a warning
TOTAL_WARN = 300  # ... and the whole script


def fit(rs: Ruleset) -> tuple[Ruleset, list[RuleFidelity], list[str]]:
    """What ufw enforces of `rs`, the fidelity of each rule, and warnings."""
    report: list[RuleFidelity] = []
    keep: dict[str, IRRule | None] = {}
    audit = rs.mode == "audit"
    for rule in rs.rules():
        key = f"{rule.section}:{safe_name(rule.name)}"
        m, notes = rule.match, name_notes(rs, rule)
        owner = m.uid is not None or m.gid is not None or m.cgroup is not None
        why = None
        if not has_destination(rs, rule):
            why = "; ".join(notes) or "no address to match"
        elif m.proto == "icmp":
            why = "ufw has no ICMP rules (its before6.rules accept outgoing ICMPv6 echo, errors " \
                  "and neighbour discovery by themselves)"
        elif owner and rule.section == "allow":
            why = "ufw cannot match the socket's owner (user, group, unit): left out, as " \
                  "kept it would allow every user"
        if why is not None:
            report.append(RuleFidelity(key, "dropped", why))
            keep[rule.counter] = None
            continue
        new = rule
        if owner:
            notes.append("applies to every user: ufw cannot match the socket's owner")
            new = without(new, uid=None, gid=None, cgroup=None, cgroup_level=0)
        if m.until is not None:
            notes.append(f"ufw has no expiry: delete the rule by hand at {utc_text(m.until)} UTC")
            new = without(new, until=None)
        if rule.section == "deny":
            notes.append("logged by ufw's LOG target ([UFW ...] in the kernel log), not NFLOG "
                         f"og:deny:{safe_name(rule.name)}" + ("; accepted (audit)" if audit else ""))
            if rs.default_action == "reject" and not audit:
                notes.append(REJECT_NOTE)
        keep[rule.counter] = new
        report.append(RuleFidelity(key, "approximated", "; ".join(notes)) if notes
                      else RuleFidelity(key, "exact"))
    default = ("accepted without a log (audit)" if audit else
               "logged by ufw as [UFW BLOCK] (3/min), not NFLOG og:default")
    if rs.default_action == "reject" and not audit:
        default += f"; {REJECT_NOTE}"
    report.append(RuleFidelity("default", "approximated", default))
    warnings = dns_warnings(rs)
    if rs.forward:
        warnings.append("options.forward is not exported: add `ufw route` rules by hand")
    return effective(rs, keep), report, warnings


def _ports(ports: tuple[tuple[int, int], ...]) -> list[str]:
    chunks: list[list[str]] = [[]]
    used = 0
    for lo, hi in ports:
        cost = 1 if lo == hi else 2
        if used + cost > PORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(str(lo) if lo == hi else f"{lo}:{hi}")
        used += cost
    return [",".join(c) for c in chunks]


def _dests(rs: Ruleset, rule: IRRule) -> list[str]:
    if rule.any_destination:
        return ["any"]
    out: list[str] = []
    for key in ([rule.inline] if rule.inline else []) + list(rule.lists):
        el = rs.sources[key].elements
        out.extend(check_addr(a, rule.counter) for a in el.v4 + el.v4_nets + el.v6 + el.v6_nets)
    return list(dict.fromkeys(out))


def _matches(rule: IRRule) -> list[str]:
    """`proto … port …` parts; "" for every protocol and port."""
    m = rule.match
    protos = [m.proto] if m.proto in ("tcp", "udp") else (["tcp", "udp"] if m.ports else [])
    if not protos:
        return [""]
    if not m.ports:
        return [f"proto {p}" for p in protos]
    return [f"proto {p}|{chunk}" for p in protos for chunk in _ports(m.ports)]


def commands(rs: Ruleset) -> tuple[list[str], dict[str, int]]:
    """The ufw commands for a ruleset ufw can enforce (`fit`'s first value), and how many
    ufw rules each policy rule became."""
    blocked = "allow" if rs.mode == "audit" else (
        "reject" if rs.default_action == "reject" else "deny")
    seen: set[tuple[str, str]] = set()
    out: list[str] = []
    sizes: dict[str, int] = {}
    for rule in rs.rules():
        action = "allow out" if rule.section == "allow" else f"{blocked} out log"
        comment = shlex.quote(f"og:{rule.section}:{safe_name(rule.name)}")
        count = 0
        for dest in _dests(rs, rule):
            for match in _matches(rule):
                if (dest, match) in seen:
                    continue  # ufw would update the earlier rule; it decides these packets
                seen.add((dest, match))
                proto, _, port = match.partition("|")
                words = ["ufw", *action.split(), *proto.split(), "to", dest]
                words += ["port", port] if port else []
                out.append(" ".join(words) + f" comment {comment}")
                count += 1
        sizes[rule.counter] = count
    default = "allow" if rs.mode == "audit" else (
        "reject" if rs.default_action == "reject" else "deny")
    out.append(f"ufw default {default} outgoing")
    return out, sizes


def export(rs: Ruleset) -> Export:
    fitted, report, warnings = fit(rs)
    cmds, sizes = commands(fitted)
    big = {k: n for k, n in sizes.items() if n > RULE_WARN}
    for key, n in big.items():
        warnings.append(f"{key} becomes {n} ufw rules (one per address and port group): ufw "
                        "checks them one by one for every new connection and rewrites them all "
                        "on each change; use `--target iptables` (ipset) or outguard's nftables "
                        "backend for large lists")
    if len(cmds) > TOTAL_WARN and not big:
        warnings.append(f"{len(cmds)} ufw commands: ufw gets slow to load and to check this many "
                        "rules; consider `--target iptables` (ipset) or the nftables backend")
    head = [
        "#!/bin/sh",
        f"# outguard policy {rs.policy_digest[:12]} as ufw commands (outgoing only).",
        "# Rules are added after any you have; the default comes last. Then: ufw enable",
        "set -e",
    ]
    return Export("ufw", {"outguard-ufw.sh": "\n".join(head + cmds) + "\n"}, report, warnings)
