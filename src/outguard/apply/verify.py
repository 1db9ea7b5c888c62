"""`outguard verify` and `apply --verify`: test the applied rules in the kernel.

Place in the data flow: above the pipeline (the applied policy, lowered again, with its names
resolved through the host's resolver), `ruleset.probes` (which probes, what they mean) and
`kernel.prober` (the probes and the guard). The probes run one after the other, each between two
reads of outguard's counters, so that a counter that moved belongs to that probe; the guard
table keeps any probe the policy denies on the host, whatever outguard's table does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outguard.apply.lockrecord import current_lockdown
from outguard.errors import StateError
from outguard.kernel import counters as kc
from outguard.kernel import prober
from outguard.pipeline import load_applied, lower_policy
from outguard.ruleset.lower import Resolver, system_resolver
from outguard.ruleset.probes import (
    Outcome,
    ProbeSpec,
    Skipped,
    choose,
    judge,
    under_lockdown,
)
from outguard.state import StateDir

DEFAULT_TIMEOUT = 2.0  # seconds a probe waits for an answer
GUARDED_TIMEOUT = 0.5  # ... and one the policy blocks (its counters tell, not an answer)
ProbeFn = Callable[[ProbeSpec, float], str]


def send_probe(spec: ProbeSpec, timeout: float) -> str:
    return prober.probe_as(spec.uid, spec.gid, spec.dst, spec.port, spec.proto, timeout)


@dataclass
class VerifyReport:
    outcomes: list[Outcome]
    skipped: list[Skipped]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def mismatches(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "notes": self.notes,
                "probes": [{"subject": o.spec.subject, "dst": o.spec.dst, "port": o.spec.port,
                            "proto": o.spec.proto, "uid": o.spec.uid,
                            "expected": o.spec.expect.rule,
                            "expected_verdict": o.spec.expect.verdict, "outcome": o.outcome,
                            "blocked_by": o.by, "ok": o.ok, "detail": o.detail}
                           for o in self.outcomes],
                "not_probed": [{"subject": s.subject, "why": s.why} for s in self.skipped]}


def verify(state: StateDir, nft: Any, *, resolver: Resolver = system_resolver,
           timeout: float = DEFAULT_TIMEOUT, send: ProbeFn = send_probe) -> VerifyReport:
    """Probe the policy applied in `state` (`nft`: libnftables in this namespace, for the
    guard). StateError when nothing is applied."""
    policy = load_applied(state)
    if policy is None:
        raise StateError("nothing is applied: nothing to verify")
    ruleset = lower_policy(policy, resolver=resolver)
    probes, skipped = choose(ruleset, lambda name: list(resolver(name)))
    notes = []
    if ruleset.mode == "audit":
        notes.append("audit mode: what the default and deny rules would block is logged and let"
                     " pass; verify's guard keeps their probes on the host")
    if (lockdown := current_lockdown(state)) is not None:
        notes.append(f"a lockdown is in force until {lockdown.until_text}: what the allow rules"
                     " it does not keep let out is expected to be blocked by it")
        probes = under_lockdown(probes, lockdown.keep)
    guarded = [(p.dst, p.port, p.proto) for p in probes if p.guarded]
    outcomes = []
    with prober.Guard(nft, guarded) as guard:
        for spec in probes:
            before, held = kc.read_counters(), guard.held()
            # a probe that must be dropped moves a counter (outguard's, or the guard's) as
            # its first packet goes: no need to wait for an answer that cannot come
            raw = send(spec, min(timeout, GUARDED_TIMEOUT) if spec.guarded else timeout)
            after = kc.read_counters()
            moved = {k: v[0] - before.get(k, (0, 0))[0] for k, v in after.items()
                     if v[0] != before.get(k, (0, 0))[0]}
            outcomes.append(judge(spec, raw, moved, guard.held() > held))
    return VerifyReport(outcomes, skipped, notes)


def describe(report: VerifyReport) -> list[str]:
    """The report for people: one line a probe, the rules not probed, the verdict."""
    lines = [f"note: {n}" for n in report.notes]
    for o in report.outcomes:
        mark = "ok  " if o.ok else "FAIL"
        lines.append(f"{mark} {o.spec.subject:24} {o.spec!s:36} {o.outcome}"
                     + (f" ({o.by})" if o.by else "") + ("" if o.ok else f": {o.detail}"))
    lines += [f"--   {s.subject:24} not probed: {s.why}" for s in report.skipped]
    bad = len(report.mismatches())
    lines.append(f"{len(report.outcomes)} probe(s), {bad} differ(s) from the policy" if bad
                 else f"{len(report.outcomes)} probe(s): the kernel does what the policy says")
    return lines


def roll_back_mismatch(state: StateDir, nft: Any, report: VerifyReport) -> str:
    """`apply --verify` found a mismatch: roll back to what was applied before (as `outguard
    rollback` does, a pending confirmation included: its watchdog is stopped), recorded as
    done by verify with the first differing probe as the reason."""
    bad = report.mismatches()
    why = f"verify: {len(bad)} probe(s) differ from the policy, first {bad[0].spec.subject}" \
          f" {bad[0].spec}: {bad[0].detail}" if bad else "verify"
    return roll_back_failed(state, nft, why)


def roll_back_failed(state: StateDir, nft: Any, why: str) -> str:
    """Roll back the apply `verify` did not pass, recorded as done by verify, for `why`."""
    from outguard.apply.recovery import rollback_locked  # noqa: PLC0415

    with state.locked():
        return rollback_locked(state, nft, pending=state.pending(), by="verify", why=why)
