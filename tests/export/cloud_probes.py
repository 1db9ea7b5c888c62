"""The probe table of the cloud evaluation tests: probes made from a ruleset, each decided by
`outguard.ruleset.decide.decide` and by a target's evaluator (tests/export/evaluators/), and the check
that every difference is named in the export's fidelity report.

Probes per rule: its first and last address of each source and family, on each of its ports'
ends and one port outside, for each protocol it names (and icmp); its host names with their
export-time address (and, for names that did not resolve, an unlisted address); a name below
each wildcard at an unlisted address. Plus unlisted addresses on common ports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from outguard.export.fidelity import Export
from outguard.export.names import rule_names
from outguard.ruleset.decide import Flow, decide, rule_matches
from outguard.ruleset.ir import IRRule, Ruleset
from tests.export.evaluators.cloud import Probe, Verdict

UNLISTED = ("203.0.113.250", "2001:db8:ffff::250")
PROTOS = ("tcp", "udp", "icmp")
Evaluator = Callable[[dict[str, str], Probe], Verdict]


def _addresses(rs: Ruleset, rule: IRRule) -> list[str]:
    out: list[str] = []
    for key in ((rule.inline,) if rule.inline else ()) + rule.lists:
        el = rs.sources[key].elements
        for group in (el.v4, el.v6, el.v4_nets, el.v6_nets):
            picks = [group[0], group[-1]] if group else []
            out.extend(p.split("/")[0] for p in picks)
    return list(dict.fromkeys(out))


def _ports(rule: IRRule) -> list[int | None]:
    ports: list[int | None] = [p for lo, hi in rule.match.ports for p in (lo, hi)]
    outside = max((hi for _lo, hi in rule.match.ports), default=442) + 1
    return [*dict.fromkeys([*ports, outside, 443, 53])]


def probes(rs: Ruleset) -> Iterator[Probe]:
    seen: set[Probe] = set()

    def emit(dst: str, name: str | None, rule: IRRule | None) -> Iterator[Probe]:
        for proto in PROTOS:
            for port in ([None] if proto == "icmp" else _ports(rule) if rule else [443, 53, 25]):
                probe = Probe(dst, port, proto, name)  # type: ignore[arg-type]
                if probe not in seen:
                    seen.add(probe)
                    yield probe

    for rule in rs.rules():
        for addr in _addresses(rs, rule):
            yield from emit(addr, None, rule)
        info = rule_names(rs, rule)
        for name in info.names:
            for addr in rs.resolved.get(name, ()) or UNLISTED[:1]:
                yield from emit(addr, name, rule)
        for wild in info.wildcards:
            yield from emit(UNLISTED[0], "a.b" + wild[1:], rule)
    for addr in UNLISTED:
        yield from emit(addr, None, None)


def _keys_for(rs: Ruleset, flow: Flow, now: datetime) -> set[str]:
    keys = {r.counter for r in rs.rules() if rule_matches(rs, r, flow, now) is not None}
    if flow.dst is not None and flow.name is not None:  # rules that match the name alone
        by_name = Flow(None, flow.port, flow.proto, name=flow.name)
        keys |= {r.counter for r in rs.rules() if rule_matches(rs, r, by_name, now) is not None}
    return keys


def differences(rs: Ruleset, export: Export, evaluate: Evaluator,
                now: datetime) -> tuple[int, list[str]]:
    """(probes run, the differences the fidelity report does not name)."""
    report = {f.rule: f.level for f in export.fidelity}
    silent: list[str] = []
    count = 0
    for probe in probes(rs):
        count += 1
        flow = Flow(probe.dst, probe.port, probe.proto, name=probe.name)
        decision = decide(rs, flow, now)
        want: Verdict = "allow" if decision.verdict == "accept" else "deny"
        got = evaluate(export.files, probe)
        if got == want:
            continue
        keys = {decision.rule} | _keys_for(rs, flow, now)
        if rs.dns is not None and probe.port in (53, 853):
            keys.add("dns")
        if not any(report.get(k, "exact") != "exact" for k in keys):
            silent.append(f"{probe}: outguard {want} ({decision.rule}), export {got};"
                          f" rules {sorted(keys)} are all exact")
    return count, silent
