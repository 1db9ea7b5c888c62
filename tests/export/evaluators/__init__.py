"""Evaluators of exported rules: what each target does with one outbound attempt (issue 17).

An export is right when the target, given the exported files, lets through and blocks what
`outguard.ruleset.decide.decide` (what `outguard explain` says) lets through and blocks — or when every
difference is named by a line of the export's fidelity report that is not "exact". The
comparison (`tests/export/evaluation.py`) needs, per target, an **evaluator**:

    def evaluate(export: Export, probes: Sequence[Probe]) -> list[Outcome]

one `Outcome` per `Probe`, in order. Where a real peer runs here the evaluator *is* the real
thing: for `iptables` and `ufw` the export is loaded with the real tools in a network namespace
and the probes are real packets (`tests/export/evaluators/kernel.py`, used by the kernel tests).
Elsewhere an evaluator is a small, documented model of the target's semantics, written from
the vendor's documentation, one module per target (`windows.py`, `k8s.py`, ...), each with a
docstring that says which rules of the target it models and where they are documented, and
with its own tests that the model can fail (a known-wrong export must be caught).

To add an evaluator for a cloud target (aws, azure, gcp, terraform):

1. write `tests/export/evaluators/<target>.py` with one function per form the export holds
   (e.g. security group vs Network Firewall) of the signature above; read only
   `export.files` (parse the JSON/YAML you wrote, as the vendor would), never the IR;
2. list the forms in `FORMS` of that module: {form name: (export options, evaluate)}, the
   options being what `compile --target T -o KEY=VALUE` passes (e.g. {"kind": "cilium"});
3. add the target to `tests/export/test_evaluation.py`'s `TARGETS` (target name → module).
   The test then runs every form over every policy of `tests/export/probes.py` and fails on
   any difference that no non-exact report line names (`evaluation.compare`).
4. write a test that your model can fail: an export known to be wrong (edit its files) must
   give a difference (see `test_evaluation.py::test_models_catch_a_wrong_export`).

Outcome.rule: the fidelity report key of the exported rule that decided (`allow:x`, `deny:x`,
`default`, or a key the exporter added for a rule of its own, e.g. `dns` for the DNS allow of
the k8s target), or None when the target cannot tell. When the target's verdict differs from
`decide`'s, the difference is *named* when the report line of `decide`'s rule or of
`Outcome.rule` is approximated or dropped; a rule reported *dropped* must never decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from outguard.export.fidelity import Export
from outguard.ruleset.decide import Flow

Proto = Literal["tcp", "udp", "icmp"]
Verdict = Literal["accept", "drop", "reject"]


@dataclass(frozen=True)
class Probe:
    """One outbound attempt: to `dst` (an address: every target sees one), after the client
    resolved `name` to it (None: a bare address), to `port` (None for ICMP echo), as `uid`
    (gid = uid: 0 root, 65534 nobody/nogroup)."""

    dst: str
    port: int | None
    proto: Proto = "tcp"
    uid: int = 0
    name: str | None = None
    why: str = ""  # what the probe tests (shown in failures)

    def flow(self) -> Flow:
        return Flow(dst=self.dst, port=self.port, proto=self.proto, uid=self.uid, gid=self.uid,
                    name=self.name)

    def __str__(self) -> str:
        via = f" ({self.name})" if self.name else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.proto} {self.dst}{via}{port} uid {self.uid}"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    rule: str | None = None  # fidelity key of the deciding exported rule, if known
    note: str = ""

    @property
    def passes(self) -> bool:
        return self.verdict == "accept"


Evaluate = Callable[[Export, Sequence[Probe]], list[Outcome]]

__all__ = ["Evaluate", "Outcome", "Probe", "Proto", "Verdict"]
