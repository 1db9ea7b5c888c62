"""The comparison of the export evaluation (issue 17): `decide` against a target's evaluator.

`compare` takes the probes, what `decide` says for each (on `probes.truth`: the policy as
outguard means it) and what the evaluator says the exported rules do, and returns every
problem:

- a **silent difference**: the verdicts differ (accept / drop / reject) and neither the report
  line of `decide`'s rule nor that of the evaluator's rule is approximated or dropped;
- a **dropped rule that decides**: the evaluator says an exported rule decided that the report
  says was left out;
- an evaluator's rule key that the report does not have (a typo in a key would hide a
  difference); `builtin:…` keys name the target's own rules and have no line.

A difference between drop and reject counts (the socket sees it). Audit mode: `decide` says
accept for what it would block, as the kernel does; the targets' audit forms must accept too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from outguard.export.common import safe_name
from outguard.export.fidelity import Export, RuleFidelity
from outguard.ruleset.decide import Decision, decide
from outguard.ruleset.ir import Ruleset
from tests.export import probes as tables
from tests.export.evaluators import Evaluate, Outcome, Probe


def report_key(rule: str) -> str:
    """The fidelity key of a decision key (`allow:x`), as exporters write names."""
    section, sep, name = rule.partition(":")
    if section in ("allow", "deny") and sep:
        return f"{section}:{safe_name(name)}"
    return rule


@dataclass(frozen=True)
class Row:
    probe: Probe
    truth: Decision
    outcome: Outcome

    def __str__(self) -> str:
        why = f" [{self.probe.why}]" if self.probe.why else ""
        by = f" by {self.outcome.rule}" if self.outcome.rule else ""
        note = f" ({self.outcome.note})" if self.outcome.note else ""
        return (f"{self.probe}{why}: decide {self.truth.verdict} by {self.truth.rule}; "
                f"target {self.outcome.verdict}{by}{note}")


def rows(truth: Ruleset, probes: Sequence[Probe], outcomes: Sequence[Outcome],
         now: datetime) -> list[Row]:
    assert len(probes) == len(outcomes), "the evaluator must answer every probe"
    return [Row(p, decide(truth, p.flow(), now), o) for p, o in zip(probes, outcomes, strict=True)]


def compare(export: Export, table: Sequence[Row]) -> list[str]:
    """Every problem of `table` against the export's fidelity report (see the module doc)."""
    report: dict[str, RuleFidelity] = {f.rule: f for f in export.fidelity}
    problems: list[str] = []
    for row in table:
        named = [k for k in (report_key(row.truth.rule), row.outcome.rule)
                 if k is not None and k in report and report[k].level != "exact"]
        rule = row.outcome.rule
        if rule is not None and rule in report and report[rule].level == "dropped":
            problems.append(f"dropped rule decides: {row}")
        if rule is not None and rule not in report and not rule.startswith("builtin:"):
            problems.append(f"a rule the report does not know decides: {row}")
        if row.truth.verdict != row.outcome.verdict and not named:
            problems.append(f"silent difference: {row}")
    return problems


def differences(table: Sequence[Row]) -> list[Row]:
    return [r for r in table if r.truth.verdict != r.outcome.verdict]


def evaluate(policy: str, export: Export, evaluator: Evaluate) -> tuple[list[Row], list[str]]:
    """Run `evaluator` over the probe table of `policy`; the rows and the problems."""
    probes = tables.probes(policy)
    table = rows(tables.truth(policy), probes, evaluator(export, probes), tables.now(policy))
    return table, compare(export, table)


