"""The ufw export: golden programs for every shared example policy, the fidelity report, the
warning for lists ufw cannot hold well, and hostile names. What the program does in a real ufw
is tested in tests/kernel/test_ufw_backend.py.

Goldens: tests/export/golden/ufw/<policy>.py and <policy>.fidelity.txt;
`OUTGUARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/export/test_ufw.py` rewrites them.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace

import pytest

from outguard.export.ufw import commands, export, fit
from tests.export.cloud_inputs import GOLDEN_DIR, check_golden, policy_names, ruleset, ruleset_of

GOLDEN = GOLDEN_DIR / "ufw"


@pytest.mark.parametrize("name", policy_names())
def test_golden(name: str) -> None:
    result = export(ruleset(name))
    GOLDEN.mkdir(parents=True, exist_ok=True)
    check_golden(GOLDEN / f"{name}.py", result.files["outguard-ufw.py"])
    check_golden(GOLDEN / f"{name}.fidelity.txt", result.report() + "\n")


def test_no_stray_goldens() -> None:
    stems = {p.name.split(".")[0] for p in GOLDEN.iterdir()}
    assert stems == set(policy_names())


def _rules(program: str) -> list[list[str]]:
    """The RULES of the program, read back (and the program is valid Python)."""
    ast.parse(program)
    start = program.index('RULES = json.loads(r"""') + len('RULES = json.loads(r"""')
    rules: list[list[str]] = json.loads(program[start:program.index('""")', start)])
    return rules


def _commands(name: str) -> list[list[str]]:
    return _rules(export(ruleset(name)).files["outguard-ufw.py"])


def test_deny_rules_come_first_and_the_default_is_set_by_the_program() -> None:
    cmds = _commands("cases")
    actions = [c[0] for c in cmds]
    first_allow = actions.index("allow")
    assert set(actions[:first_allow]) == {"deny"}
    assert set(actions[first_allow:]) == {"allow"}
    program = export(ruleset("cases")).files["outguard-ufw.py"]
    assert 'DEFAULT = "deny"' in program and program.startswith("#!/usr/bin/python3\n")


def test_report_says_what_ufw_cannot_do() -> None:
    report = {f.rule: f for f in export(ruleset("cases")).fidelity}
    assert report["allow:backup-as-nobody"].level == "dropped"
    assert "owner" in report["allow:backup-as-nobody"].how
    assert report["allow:ping"].level == "dropped"
    assert report["deny:nobody-no-ldap"].level == "approximated"
    assert "every user" in report["deny:nobody-no-ldap"].how
    assert report["allow:web-api"].level == "exact"
    assert report["default"].level == "approximated"
    assert "ICMPv6 echo" in report["default"].how  # issue 17 §1: before6.rules lets ping out


def test_what_ufw_enforces_leaves_out_owners_icmp_and_expiry() -> None:
    fitted, _report, _warnings = fit(ruleset("cases"))
    assert "backup-as-nobody" not in {r.name for r in fitted.allow}
    [ldap] = [r for r in fitted.deny if r.name == "nobody-no-ldap"]
    assert ldap.match.uid is None
    assert all(r.match.until is None for r in fitted.rules())


def test_large_list_gets_a_warning_that_says_what_to_do() -> None:
    result = export(ruleset("host-sets"))
    [warning] = [w for w in result.warnings if "deny:feed" in w]
    assert "61 ufw rules" in warning and "--target iptables" in warning
    assert not export(ruleset("cases")).warnings


def test_same_match_twice_is_added_once() -> None:
    text = """\
version: 1
deny:
  - name: first
    to: [203.0.113.10]
    ports: [443]
    proto: tcp
allow:
  - name: second
    to: [203.0.113.10]
    ports: [443]
    proto: tcp
"""
    rules = [r for r in _rules(export(ruleset_of(text)).files["outguard-ufw.py"])
             if "203.0.113.10" in r]
    assert rules == [["deny", "out", "log", "proto", "tcp", "to", "203.0.113.10", "port", "443",
                      "comment", "og:deny:first"]]


def test_hostile_names_stay_one_shell_word() -> None:
    rs = ruleset_of("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n")
    evil = "x'; touch /tmp/pwned; echo '\n$(reboot)`id`"
    rs = replace(rs, allow=(replace(rs.allow[0], name=evil, comment=evil),))
    [rule] = [r for r in _rules(export(rs).files["outguard-ufw.py"]) if r[0] == "allow"]
    assert rule[:6] == ["allow", "out", "to", "203.0.113.10", "comment", rule[5]]
    assert len(rule) == 6 and all(c not in rule[5] for c in "'`$;\n \"\\")


def test_commands_of_a_ruleset() -> None:
    cmds, sizes = commands(fit(ruleset("cases"))[0])
    assert ["deny", "out", "log", "proto", "tcp", "to", "any", "port", "25,465,587", "comment",
            "og:deny:no-smtp"] in cmds
    assert sizes["allow:web-api"] == 2
