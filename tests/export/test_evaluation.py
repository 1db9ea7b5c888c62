"""The export evaluation (issue 17): for every target with a modelled evaluator, every form of
its export, every policy of `tests/export/probes.py`: the verdict of each probe by `decide`
and by the evaluator of the exported files agree, or the difference is named by a non-exact
line of the fidelity report (`evaluation.compare`); no rule reported dropped decides.

The iptables and ufw exports are evaluated by the real kernel (tests/kernel/test_iptables_
backend.py, tests/kernel/test_ufw_backend.py). Cloud targets add their module to TARGETS
(see tests/export/evaluators/__init__.py).
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from types import ModuleType

import pytest

from outguard.export.fidelity import RuleFidelity
from outguard.export.targets import export
from tests.export import probes as tables
from tests.export.evaluation import compare, differences, evaluate, report_key

TARGETS: dict[str, str] = {  # target: its evaluator module (FORMS: form → (options, evaluate))
    "windows": "tests.export.evaluators.windows",
    "k8s": "tests.export.evaluators.k8s",
}


def _module(target: str) -> ModuleType:
    return importlib.import_module(TARGETS[target])


CASES = [(t, form, p) for t in TARGETS for form in _module(t).FORMS
         for p in tables.eval_policy_names()]


@pytest.mark.parametrize(("target", "form", "policy"), CASES,
                         ids=[f"{t}-{f}-{p}" for t, f, p in CASES])
def test_every_difference_is_named(target: str, form: str, policy: str) -> None:
    opts, evaluator = _module(target).FORMS[form]
    result = export(target, tables.exported(policy), opts)
    table, problems = evaluate(policy, result, evaluator)
    assert table, "no probe"
    assert not problems, f"{len(problems)} problem(s) of {target}/{form} on {policy}:\n" + \
        "\n".join(problems[:40])


def test_a_difference_the_report_calls_exact_is_caught() -> None:
    """The comparison can fail: a report that claims every line exact, for an export that
    differs from decide (Windows cannot tell users apart), is refused."""
    opts, evaluator = _module("windows").FORMS["powershell"]
    result = export("windows", tables.exported("cases"), opts)
    table, problems = evaluate("cases", result, evaluator)
    assert differences(table) and not problems
    lying = replace(result, fidelity=[RuleFidelity(f.rule, "exact") for f in result.fidelity])
    assert any(p.startswith("silent difference") for p in compare(lying, table))


def test_report_keys_of_decide_rules() -> None:
    assert report_key("allow:web api") == "allow:web_api"
    assert report_key("default") == "default"
