"""IR → `iptables-restore` / `ip6tables-restore` files and an `ipset restore` file.

Place in the data flow: `export.names.for_export` makes the IR; this module renders it (pure)
into `ipsets`, `rules.v4` and `rules.v6`, and `export.iptables_scripts` adds the `deploy.sh`,
`remove.sh` and `README.txt` that load and remove them on an iptables host (outguard itself
applies only nftables). Semantics mirror `nftables.nft` and `decide` exactly:

    OUTPUT      -I 1 -j OUTGUARD-OUT (FORWARD -j OUTGUARD-FWD with `options.forward`)
    OUTGUARD-OUT  -o lo RETURN · ctstate RELATED,ESTABLISHED RETURN · ICMPv6 ND RETURN
                  · deny rules in order → OUTGUARD-D<i> (NFLOG og:deny:<name>, DROP/reject)
                  · allow rules in order → RETURN · OUTGUARD-DEFAULT (NFLOG og:default, verdict)

"Accept" is RETURN, not ACCEPT: like nftables' separate tables, outguard's verdict must not
skip the other rules of OUTPUT (ufw's, Docker's). In audit mode a deny rule is two lines (an
NFLOG, which does not end the walk, then RETURN), since a RETURN inside a verdict chain would
continue the walk. The NFLOG lines are rate-limited per flow (`-m hashlimit`, one table
`og-log` per family, keyed by destination address and port: a loud flow cannot hide a new
one, as the nftables backend's log gate) and their prefix says what the kernel does, as the
monitor reads it: `og:deny:<name>` (drop), `og:deny:<name> reject`, `og:default audit`.
Every decision line carries `-m comment "og:<key>"` (`deny:x`, `allow:x`,
`default`): its packet counter is the rule's counter. Lists, and inline destinations with more
than INLINE_MAX addresses per family, become ipsets named `og-<name>-<digest>-<4|6>`: a new list
gets a new set, so loading never touches a set a live rule uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from outguard.export.common import (
    check_addr,
    check_cgroup,
    dns_warnings,
    effective,
    has_destination,
    log_prefix,
    name_notes,
    safe_name,
    safe_text,
    utc_text,
    without,
)
from outguard.export.fidelity import Export, RuleFidelity
from outguard.export.iptables_scripts import (
    CHAIN_FWD,
    CHAIN_OUT,
    CHAIN_PREFIX,
    JUMPS,
    SET_PREFIX,
    deploy_sh,
    readme,
    remove_sh,
)
from outguard.ruleset.ir import IRRule, Match, Ruleset

CHAIN_DEFAULT, CHAIN_REJECT = "OUTGUARD-DEFAULT", "OUTGUARD-REJECT"
INLINE_MAX = 8  # more addresses of one family in a rule's own `to`: an ipset instead of -d lines
TIME_MAX = datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)  # xt_time keeps 32-bit seconds
LIMIT_MAX = 10_000  # the fastest log rate and biggest burst written
LOG_TABLE = "og-log"  # the hashlimit table of the NFLOG lines (one per family)
LOG_FLOWS = 8192  # flows it tracks, as the nftables backend's log gate (FLOW_SET_SIZE)
_PER_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MULTIPORT_SLOTS = 15  # a range takes two
ND_TYPES = (133, 135, 136, 131, 143)  # as nftables.nft: router/neighbour solicit, advert, MLD
FILES = ("ipsets", "rules.v4", "rules.v6", "deploy.sh", "remove.sh", "README.txt")


@dataclass
class IpSet:
    name: str
    version: int
    net: bool  # hash:net (prefixes) or hash:ip
    elements: Callable[[], list[str]] = field(repr=False)


@dataclass
class Rendered:
    """The three files iptables and ipset load, and what they hold."""

    v4: str
    v6: str
    ipset: str
    sets: list[str]
    chains: dict[int, list[str]]  # per IP version: outguard's chains in the files
    ruleset: Ruleset  # what the files enforce (see `fit`)


def fit(rs: Ruleset) -> tuple[Ruleset, list[RuleFidelity], list[str]]:
    """What iptables can enforce of `rs`, the fidelity of each rule, and warnings."""
    report: list[RuleFidelity] = []
    keep: dict[str, IRRule | None] = {}
    for rule in rs.rules():
        key = f"{rule.section}:{safe_name(rule.name)}"
        notes = name_notes(rs, rule)
        if safe_name(rule.name) != rule.name:
            notes.append(f"rule name written as {safe_name(rule.name)!r}")
        if not has_destination(rs, rule):
            report.append(RuleFidelity(key, "dropped", "; ".join(notes) or "no address to match"))
            keep[rule.counter] = None
            continue
        if rule.match.cgroup is not None:
            notes.append(f"iptables looks the cgroup {rule.match.cgroup} up when the rules are"
                         " loaded: it must exist then (deploy.sh fails otherwise), and after the"
                         " unit restarts (a new cgroup) the rule matches nothing until the next"
                         " deploy")
        until = rule.match.until
        if until is not None and until > TIME_MAX + timedelta(seconds=1):
            notes.append(f"expires {until.isoformat()}, after the end of iptables' time match "
                         "(2038-01-19): it does not expire in the kernel; export again then")
            keep[rule.counter] = without(rule, until=None)
        report.append(RuleFidelity(key, "approximated", "; ".join(notes)) if notes
                      else RuleFidelity(key, "exact"))
    report.append(RuleFidelity("default", "exact"))
    warnings = dns_warnings(rs)
    rate, per = rs.log_rate
    if rate > LIMIT_MAX:
        warnings.append(f"log_rate {rate}/{per} is above iptables' limit: logged at "
                        f"{LIMIT_MAX}/{per}")
    return effective(rs, keep), report, warnings


def _port_chunks(ports: tuple[tuple[int, int], ...]) -> list[str]:
    """Port matches of at most 15 multiport slots each (the kernel's limit)."""
    chunks: list[list[str]] = [[]]
    used = 0
    for lo, hi in ports:
        cost = 1 if lo == hi else 2
        if used + cost > MULTIPORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(str(lo) if lo == hi else f"{lo}:{hi}")
        used += cost
    out = []
    for chunk in chunks:
        single = len(chunk) == 1
        out.append(f"--dport {chunk[0]}" if single else f"-m multiport --dports {','.join(chunk)}")
    return out


def _protos(m: Match, version: int) -> list[str]:
    if m.proto == "icmp":
        return ["-p icmp" if version == 4 else "-p ipv6-icmp"]
    protos = [m.proto] if m.proto in ("tcp", "udp") else (["tcp", "udp"] if m.ports else [])
    if not protos:
        return [""]
    if not m.ports:
        return [f"-p {p}" for p in protos]
    return [f"-p {p} {chunk}" for p in protos for chunk in _port_chunks(m.ports)]


def _owner(rule: IRRule, where: str) -> str:
    m, parts = rule.match, []
    if m.uid is not None or m.gid is not None:
        parts.append("-m owner")
        if m.uid is not None:
            parts.append(f"--uid-owner {int(m.uid)}")
        if m.gid is not None:
            parts.append(f"--gid-owner {int(m.gid)}")
    if m.cgroup is not None:
        parts.append(f'-m cgroup --path "{check_cgroup(m.cgroup, where)}"')
    if m.until is not None:
        # xt_time compares whole seconds and includes its stop second: stop one second early
        # is `meta time < until` of nftables.
        parts.append(f"-m time --datestop {utc_text(m.until - timedelta(seconds=1))}")
    return " ".join(parts)


def _split_all(text: str, version: int) -> list[str]:
    """hash:net takes no /0: two halves instead."""
    if text in ("0.0.0.0/0", "::/0"):
        return ["0.0.0.0/1", "128.0.0.0/1"] if version == 4 else ["::/1", "8000::/1"]
    return [text]


class _Renderer:
    def __init__(self, rs: Ruleset) -> None:
        self.rs = rs
        self.sets: dict[str, IpSet] = {}
        rate, per = rs.log_rate
        # a quiet flow's entry is kept until its bucket would be full again (at least 10 s)
        expire = min(3600, max(10, -(-(rate + max(5, rate)) * _PER_SECONDS[per] // rate)))
        self.limit = (f"-m hashlimit --hashlimit-upto {min(rate, LIMIT_MAX)}/{per} "
                      f"--hashlimit-burst {min(max(5, rate), LIMIT_MAX)} "
                      f"--hashlimit-mode dstip,dstport --hashlimit-name {LOG_TABLE} "
                      f"--hashlimit-htable-max {LOG_FLOWS} "
                      f"--hashlimit-htable-expire {expire * 1000}")
        self.blocked = "RETURN" if rs.mode == "audit" else (
            CHAIN_REJECT if rs.default_action == "reject" else "DROP")
        self.verdict = "accept" if rs.mode == "audit" else rs.default_action

    def nflog(self, key: str) -> str:
        prefix = log_prefix(key, self.verdict)
        return f'{self.limit} -j NFLOG --nflog-group {int(self.rs.nflog_group)} ' \
               f'--nflog-prefix "{prefix}"'

    def addr_items(self, key: str, version: int) -> list[str]:
        el = self.rs.sources[key].elements
        return list(el.v4 + el.v4_nets) if version == 4 else list(el.v6 + el.v6_nets)

    def ipset(self, key: str, version: int) -> str:
        source = self.rs.sources[key]
        slug = safe_name(key.rsplit(":", 1)[-1]).replace(".", "_")[:12]
        name = f"{SET_PREFIX}{slug}-{source.digest[:8]}-{version}"
        if name not in self.sets:
            el = source.elements
            nets = el.v4_nets if version == 4 else el.v6_nets

            def elements() -> list[str]:
                items = self.addr_items(key, version)
                return [part for text in items
                        for part in _split_all(check_addr(text, key), version)]
            self.sets[name] = IpSet(name, version, bool(nets), elements)
        return name

    def dests(self, rule: IRRule, version: int) -> list[str]:
        if rule.any_destination:
            return [""]
        out = []
        if rule.inline is not None:
            items = self.addr_items(rule.inline, version)
            if len(items) > INLINE_MAX:
                out.append(f"-m set --match-set {self.ipset(rule.inline, version)} dst")
            else:
                out.extend(f"-d {check_addr(a, rule.counter)}" for a in items)
        for key in rule.lists:
            if self.addr_items(key, version):
                out.append(f"-m set --match-set {self.ipset(key, version)} dst")
        return out

    def rule_lines(self, chain: str, rule: IRRule, index: int, version: int) -> list[str]:
        m = rule.match
        if chain == CHAIN_FWD and (m.uid is not None or m.gid is not None or m.cgroup is not None):
            return []  # a forwarded packet has no local socket: as in nftables, never matches
        name = safe_name(rule.name)
        counter = f'-m comment --comment "og:{rule.section}:{name}"'
        out = []
        tail = _owner(rule, rule.counter)
        for dest in self.dests(rule, version):
            for proto in _protos(rule.match, version):
                match = " ".join(p for p in (dest, proto, tail) if p)
                head = f"-A {chain} {match}".rstrip()
                if rule.section == "allow":
                    out.append(f"{head} {counter} -j RETURN")
                elif self.rs.mode == "audit":
                    out.append(f"{head} {self.nflog(f'deny:{name}')}")
                    out.append(f"{head} {counter} -j RETURN")
                else:
                    out.append(f"{head} {counter} -j OUTGUARD-D{index}")
        if out and rule.comment:
            out.insert(0, f"# {rule.section} {name}: {safe_text(rule.comment)}")
        return out

    def verdict_lines(self, chain: str, key: str, version: int) -> list[str]:
        if self.blocked == "RETURN":
            return [f"-A {chain} {self.nflog(key)}"]
        return [f"-A {chain} {self.nflog(key)}", f"-A {chain} -j {self.blocked}"]

    def family(self, version: int) -> tuple[str, list[str]]:
        rs = self.rs
        body: list[str] = []
        hooks = [CHAIN_OUT] + ([CHAIN_FWD] if rs.forward else [])
        for chain in hooks:
            if chain == CHAIN_OUT:
                body.append(f"-A {chain} -o lo -j RETURN")
            body.append(f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
            if chain == CHAIN_OUT and version == 6:
                body.extend(f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN"
                            for t in ND_TYPES)
            for i, rule in enumerate(rs.deny):
                body.extend(self.rule_lines(chain, rule, i, version))
            for i, rule in enumerate(rs.allow):
                body.extend(self.rule_lines(chain, rule, i, version))
            body.append(f'-A {chain} -m comment --comment "og:default" -j {CHAIN_DEFAULT}')
        verdicts: list[str] = []
        chains = [*hooks, CHAIN_DEFAULT]
        verdicts.extend(self.verdict_lines(CHAIN_DEFAULT, "default", version))
        if rs.mode != "audit":
            for i, rule in enumerate(rs.deny):
                chains.append(f"OUTGUARD-D{i}")
                verdicts.extend(self.verdict_lines(f"OUTGUARD-D{i}",
                                                   f"deny:{safe_name(rule.name)}", version))
        if self.blocked == CHAIN_REJECT:
            chains.append(CHAIN_REJECT)
            icmp = "icmp-admin-prohibited" if version == 4 else "icmp6-adm-prohibited"
            verdicts += [f"-A {CHAIN_REJECT} -p tcp -j REJECT --reject-with tcp-reset",
                         f"-A {CHAIN_REJECT} -j REJECT --reject-with {icmp}"]
        tool = "iptables-restore" if version == 4 else "ip6tables-restore"
        lines = [
            f"# outguard policy {rs.policy_digest[:12]} for `{tool} --noflush`, which replaces",
            f"# only the {CHAIN_PREFIX}* chains declared here. Load `ipsets` first; deploy.sh",
            "# does both, in order, and keeps the jump of an earlier deploy (see README.txt).",
            "*filter", *(f":{c} - [0:0]" for c in chains), *body, *verdicts]
        lines += [f"-I {JUMPS[c]} 1 -j {c}" for c in hooks]
        lines.append("COMMIT")
        return "\n".join(lines) + "\n", chains

    def ipset_text(self) -> str:
        lines = [f"# outguard policy {self.rs.policy_digest[:12]}: load with `ipset -exist restore`"
                 " before rules.v4 and rules.v6"]
        for s in self.sets.values():
            elements = s.elements()
            kind = "hash:net" if s.net else "hash:ip"
            family = "inet" if s.version == 4 else "inet6"
            size = max(65536, 1 << max(0, len(elements) - 1).bit_length())
            lines.append(f"create {s.name} {kind} family {family} maxelem {size}")
            lines.extend(f"add {s.name} {e}" for e in elements)
        return "\n".join(lines) + "\n"


def render(rs: Ruleset) -> Rendered:
    """The files for `rs` as iptables can enforce it (`fit`)."""
    fitted, _report, _warnings = fit(rs)
    r = _Renderer(fitted)
    v4, chains4 = r.family(4)
    v6, chains6 = r.family(6)
    return Rendered(v4, v6, r.ipset_text(), list(r.sets), {4: chains4, 6: chains6}, fitted)


def export(rs: Ruleset) -> Export:
    """The iptables export: the three files, the scripts that deploy and remove them, and a
    README.txt that holds the fidelity report too."""
    rendered = render(rs)
    _fitted, report, warnings = fit(rs)
    result = Export("iptables", {}, report, warnings)
    digest = rs.policy_digest[:12]
    result.files = dict(zip(FILES, (rendered.ipset, rendered.v4, rendered.v6, deploy_sh(digest),
                                    remove_sh(digest), readme(digest, result.report())),
                            strict=True))
    return result


def iter_counter_keys(rs: Ruleset) -> Iterator[str]:
    """Decision keys whose counters the files carry (as comments `og:<key>`)."""
    yield "default"
    for rule in rs.rules():
        yield f"{rule.section}:{safe_name(rule.name)}"
