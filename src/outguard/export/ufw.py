"""IR → the ufw rules of the same egress policy, and the program that puts them in place.

Place in the data flow: `compile.lower` makes the IR; `fit` says what ufw can enforce of it
(and how faithfully), `commands` renders that as ufw command words, and `ufw_script` wraps
them in `outguard-ufw.py`, which makes ufw's `og:` rules exactly these (converging: stale ones
go, order is the policy's) in one write of ufw's rule files and one reload. ufw evaluates its
user rules first match wins, after its own before.rules (loopback and established traffic
accepted, as outguard does), so the deny rules come first, then the allow rules, in policy
order. Two rules ufw would see as the same match are written once (the second could never
decide: the first matches the same packets).

ufw has no sets, no owner match, no expiry, no ICMP rules, and its before6.rules accepts
outgoing ICMPv6 echo requests before any user rule; it logs through its own LOG target. Each
such difference is in the fidelity report. A list becomes one rule per address: large lists
get a warning (every new connection walks the rules one by one).
"""

from __future__ import annotations

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
from outguard.export.ufw_script import script
from outguard.ruleset.ir import IRRule, Ruleset

# What the ufw kernel test measured: ufw's REJECT for IPv6 sends ICMPv6 port-unreachable
# even for TCP, and a local TCP connect() never sees it (it times out as after a drop).
REJECT_NOTE = ("rejected with ICMP port-unreachable, not admin-prohibited; IPv6 TCP too, so a "
               "local IPv6 TCP connect waits as if dropped instead of failing at once")
# Measured by the ufw kernel test (tests/kernel/test_ufw_backend.py): ping to any address passes.
ICMP6_NOTE = ("ICMPv6 echo requests (ping) pass to every address: ufw's before6.rules accepts"
              " them before any user rule")
PORT_SLOTS = 15  # ufw's multiport limit; a range takes two
RULE_WARN = 50  # one policy rule becoming more ufw rules than this gets a warning
TOTAL_WARN = 300  # ... and the whole policy


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
            if not audit and m.proto in ("any", "icmp") and not m.ports and _has_v6(rs, rule):
                notes.append(ICMP6_NOTE)
        keep[rule.counter] = new
        report.append(RuleFidelity(key, "approximated", "; ".join(notes)) if notes
                      else RuleFidelity(key, "exact"))
    default = ("accepted without a log (audit)" if audit else
               "logged by ufw as [UFW BLOCK] (3/min), not NFLOG og:default; " + ICMP6_NOTE)
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


def _has_v6(rs: Ruleset, rule: IRRule) -> bool:
    if rule.any_destination:
        return True
    keys = ([rule.inline] if rule.inline else []) + list(rule.lists)
    return any(rs.sources[k].elements.v6 or rs.sources[k].elements.v6_nets for k in keys)


def _matches(rule: IRRule) -> list[list[str]]:
    """`proto … port …` words; [] for every protocol and port."""
    m = rule.match
    protos = [m.proto] if m.proto in ("tcp", "udp") else (["tcp", "udp"] if m.ports else [])
    if not protos:
        return [[]]
    if not m.ports:
        return [["proto", p] for p in protos]
    return [["proto", p, "port", chunk] for p in protos for chunk in _ports(m.ports)]


def commands(rs: Ruleset) -> tuple[list[list[str]], dict[str, int]]:
    """The ufw rules (as `ufw` command words) for a ruleset ufw can enforce (`fit`'s first
    value), and how many ufw rules each policy rule became."""
    blocked = "allow" if rs.mode == "audit" else (
        "reject" if rs.default_action == "reject" else "deny")
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out: list[list[str]] = []
    sizes: dict[str, int] = {}
    for rule in rs.rules():
        action = ["allow", "out"] if rule.section == "allow" else [blocked, "out", "log"]
        comment = f"og:{rule.section}:{safe_name(rule.name)}"
        count = 0
        for dest in _dests(rs, rule):
            for match in _matches(rule):
                proto, port = match[:2], match[2:]
                if (dest, tuple(match)) in seen:
                    continue  # ufw would update the earlier rule; it decides these packets
                seen.add((dest, tuple(match)))
                out.append([*action, *proto, "to", dest, *port, "comment", comment])
                count += 1
        sizes[rule.counter] = count
    return out, sizes


def default_policy(rs: Ruleset) -> str:
    """ufw's default outgoing policy for the ruleset."""
    return "allow" if rs.mode == "audit" else (
        "reject" if rs.default_action == "reject" else "deny")


def export(rs: Ruleset) -> Export:
    fitted, report, warnings = fit(rs)
    cmds, sizes = commands(fitted)
    big = {k: n for k, n in sizes.items() if n > RULE_WARN}
    for key, n in big.items():
        warnings.append(f"{key} becomes {n} ufw rules (one per address and port group): ufw "
                        "checks them one by one for every new connection; use `--target "
                        "iptables` (ipset) or outguard's nftables backend for large lists")
    if len(cmds) > TOTAL_WARN and not big:
        warnings.append(f"{len(cmds)} ufw rules: ufw checks them one by one for every new "
                        "connection; consider `--target iptables` (ipset) or the nftables backend")
    program = script(rs.policy_digest[:12], default_policy(rs), cmds)
    return Export("ufw", {"outguard-ufw.py": program}, report, warnings)
