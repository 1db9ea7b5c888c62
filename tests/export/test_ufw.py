"""The ufw export: golden scripts for every shared example policy, the fidelity report, the
warning for lists ufw cannot hold well, and hostile names.

Goldens: tests/export/golden/ufw/<policy>.sh and <policy>.fidelity.txt;
`OUTGUARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/export/test_ufw.py` rewrites them.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from outguard.export.ufw import export, fit
from tests.export.cloud_inputs import GOLDEN_DIR, check_golden, policy_names, ruleset, ruleset_of

GOLDEN = GOLDEN_DIR / "ufw"


@pytest.mark.parametrize("name", policy_names())
def test_golden(name: str) -> None:
    result = export(ruleset(name))
    GOLDEN.mkdir(parents=True, exist_ok=True)
    check_golden(GOLDEN / f"{name}.sh", result.files["outguard-ufw.sh"])
    check_golden(GOLDEN / f"{name}.fidelity.txt", result.report() + "\n")


def test_no_stray_goldens() -> None:
    stems = {p.name.split(".")[0] for p in GOLDEN.iterdir()}
    assert stems == set(policy_names())


def _commands(name: str) -> list[list[str]]:
    text = export(ruleset(name)).files["outguard-ufw.sh"]
    return [shlex.split(ln) for ln in text.splitlines() if ln.startswith("ufw ")]


def test_deny_rules_come_first_and_the_default_last() -> None:
    cmds = _commands("cases")
    actions = [c[1] for c in cmds]
    assert cmds[-1] == ["ufw", "default", "deny", "outgoing"]
    first_allow = actions.index("allow")
    assert set(actions[:first_allow]) == {"deny"}
    assert set(actions[first_allow:-1]) == {"allow"}


def test_report_says_what_ufw_cannot_do() -> None:
    report = {f.rule: f for f in export(ruleset("cases")).fidelity}
    assert report["allow:backup-as-nobody"].level == "dropped"
    assert "owner" in report["allow:backup-as-nobody"].how
    assert report["allow:ping"].level == "dropped"
    assert report["deny:nobody-no-ldap"].level == "approximated"
    assert "every user" in report["deny:nobody-no-ldap"].how
    assert report["allow:web-api"].level == "exact"
    assert report["default"].level == "approximated"


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
    lines = [ln for ln in export(ruleset_of(text)).files["outguard-ufw.sh"].splitlines()
             if "203.0.113.10" in ln]
    assert lines == ["ufw deny out log proto tcp to 203.0.113.10 port 443 comment og:deny:first"]


def test_hostile_names_stay_one_shell_word() -> None:
    rs = ruleset_of("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n")
    evil = "x'; touch /tmp/pwned; echo '\n$(reboot)`id`"
    rs = replace(rs, allow=(replace(rs.allow[0], name=evil, comment=evil),))
    text = export(rs).files["outguard-ufw.sh"]
    for line in text.splitlines():
        if line.startswith("ufw allow"):
            words = shlex.split(line)
            assert words[:6] == ["ufw", "allow", "out", "to", "203.0.113.10", "comment"]
            assert len(words) == 7 and all(c not in words[6] for c in "'`$;\n ")
    assert text.count("\n") == len(text.splitlines())  # no line break was added
