"""The `windows` target: golden files for the shared policies, the fidelity it reports, the
PowerShell quoting against hostile rule names and comments, and the defects of issue 17 §5
(netsh lines over cmd.exe's 8,191 characters, no error checks, the profile never enabled,
wildcards dropped, names that differ only in case colliding, Windows' own allow rules).

`pwsh` is not installable on this machine (not in Debian, and its own downloads are not
reachable), so the quoting is checked by `parse_ps_line` (tests/export/evaluators/windows.py),
a tokenizer written to the PowerShell language spec for what the script uses. A hostile value
passes when every line still tokenizes into the same command and arguments and each string
decodes back to exactly the value written. What the rules *do* is checked by the evaluator
(tests/export/test_evaluation.py).
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from outguard.export.common import ExportError
from outguard.export.windows import export_windows, ps_quote
from outguard.export.windows_netsh import LINE_MAX
from outguard.export.windows_rules import GROUP, cmd_safe
from outguard.ruleset.ir import Ruleset
from tests.export.cloud_inputs import check_export, policy_names, ruleset, ruleset_of
from tests.export.evaluators.windows import parse_ps_line, parse_single_quoted, statements
from tests.export.probes import EVAL_DIR, big_list_policy

HOSTILE = [
    "it's", "a''b", "`whoami`", "$(Remove-Item C:\\ -Recurse)", "x'; Remove-Item C:\\; '",
    "line1\nline2", "semi;colon", '"double"', "\u2019smart\u2018 quotes\u201b", "$env:PATH",
    "@(1,2)", "end'", "'", "tab\there", "# not a comment", "x' -Action 'Allow",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_ps_quote_round_trips(value: str) -> None:
    quoted = ps_quote(value)
    assert parse_single_quoted(quoted, 0) == (value, len(quoted))


def test_parser_can_fail() -> None:
    with pytest.raises(AssertionError):
        parse_ps_line("New-NetFirewallRule -Name 'it's'")  # an unescaped quote ends the string
    assert parse_ps_line("-Name 'it''s'") == ["-Name", "it's"]


def _hostile_ruleset(value: str) -> Ruleset:
    base = ruleset_of("""\
version: 1
deny:
  - name: bad
    to: [198.51.100.0/24]
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
    proto: tcp
""")
    rules = [replace(r, name=f"{r.name}{value}", comment=f"c{value}") for r in base.rules()]
    return replace(base, deny=(rules[0],), allow=(rules[1],))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_and_comments_stay_inside_their_strings(value: str) -> None:
    export = export_windows(_hostile_ruleset(value))
    script = export.files["outguard-windows.ps1"]
    parsed = [parse_ps_line(s) for s in statements(script) if not s.startswith("#")]
    commands = [p[0] if p[0] != "if" else p[p.index("{") + 1] for p in parsed]
    assert commands == ["$ErrorActionPreference", "$existing", "New-NetFirewallRule",
                        "New-NetFirewallRule", "$keep", "Get-NetFirewallRule", "$others",
                        "Write-Warning", "Set-NetFirewallProfile"]
    new = [p[p.index("New-NetFirewallRule"):] for p in parsed if "New-NetFirewallRule" in p]
    for tokens, section, action in zip(new, ("deny", "allow"), ("Block", "Allow"), strict=True):
        args = dict(zip(tokens[1::2], tokens[2::2], strict=False))
        name = "bad" if section == "deny" else "web"
        assert args["-DisplayName"] == f"outguard {section}:{name}{value}"
        assert args["-Description"] == f"{section}:{name}{value}: c{value}"
        assert isinstance(args["-Name"], str)
        assert re.fullmatch(rf"outguard-{section}-{name}[a-z0-9_.-]*-[0-9a-f]{{10}}", args["-Name"])
        assert args["-Action"] == action and args["-Group"] == GROUP
        assert args["-Direction"] == "Outbound"
    netsh = export.files["outguard-windows-netsh.cmd"]
    for line in netsh.split("\r\n"):
        if "add rule" in line:
            desc = line.split('description="', 1)[1]
            assert desc.endswith('"') and '"' not in desc[:-1] and "%" not in desc


def test_cmd_safe_keeps_only_a_safe_alphabet() -> None:
    assert cmd_safe('a"b%PATH%^&|<>\nc') == "a_b_PATH_______c"


def test_profile_enabled_and_default_block_come_last() -> None:
    """Issue 17 §5: the profile was never enabled (a machine with the firewall off stayed open)."""
    result = export_windows(ruleset("lab-policy"))
    lines = result.files["outguard-windows.ps1"].splitlines()
    assert lines[-1] == ("Set-NetFirewallProfile -Profile Domain,Private,Public -Enabled True"
                         " -DefaultOutboundAction Block -LogBlocked True")
    assert all("-Profile Domain,Private,Public" in line and "-Direction Outbound" in line
               for line in lines if "New-NetFirewallRule" in line)
    netsh = result.files["outguard-windows-netsh.cmd"].split("\r\n")
    assert "netsh advfirewall set allprofiles state on" in netsh
    assert netsh.index("netsh advfirewall set allprofiles state on") > max(
        i for i, line in enumerate(netsh) if "add rule" in line)


def test_rerun_creates_before_it_removes() -> None:
    """A re-run never leaves a rule in force missing: new rules are created (those of the same
    content are kept), then the group's other rules removed."""
    script = export_windows(ruleset("cases"), form="powershell").files["outguard-windows.ps1"]
    lines = script.splitlines()
    created = [i for i, line in enumerate(lines) if "New-NetFirewallRule" in line]
    removed = [i for i, line in enumerate(lines) if "Remove-NetFirewallRule" in line]
    assert created and removed and max(created) < min(removed)
    assert all(lines[i].startswith("if ($existing -notcontains '") for i in created)
    blocks = [i for i in created if "-Action Block" in lines[i]]
    assert max(blocks) < min(i for i in created if "-Action Allow" in lines[i])


def test_fidelity_for_owner_rules_and_builtin_allow_rules() -> None:
    export = export_windows(ruleset("lab-policy"), form="powershell")
    by_rule = {f.rule: f for f in export.fidelity}
    assert by_rule["allow:backup-as-nobody"].level == "dropped"
    assert "uid 65534" in by_rule["allow:backup-as-nobody"].how
    assert by_rule["allow:web-api"].level == "exact"
    # issue 17 §5: "default deny" is not exact while Windows' own allow rules stay in force
    assert by_rule["default"].level == "approximated"
    assert "Core Networking" in by_rule["default"].how
    assert not export.exact
    disabled = export_windows(ruleset("lab-policy"), form="powershell", builtin_rules="disable")
    assert {f.rule: f for f in disabled.fidelity}["default"].level == "exact"
    script = disabled.files["outguard-windows.ps1"]
    assert "$others | Disable-NetFirewallRule" in script
    assert "Enable-NetFirewallRule" in disabled.files["outguard-windows-remove.ps1"]
    netsh = export_windows(ruleset("lab-policy"), form="netsh", builtin_rules="disable")
    assert {f.rule: f for f in netsh.fidelity}["default"].level == "approximated"


def test_netsh_lines_fit_cmd_exe_and_every_command_is_checked() -> None:
    """Issue 17 §5: lines of 19,171 characters (cmd.exe stops at 8,191) and no error check."""
    result = export_windows(ruleset_of(big_list_policy()), form="netsh")
    lines = result.files["outguard-windows-netsh.cmd"].split("\r\n")
    adds = [i for i, line in enumerate(lines) if line.startswith("netsh advfirewall firewall add")]
    assert len(adds) > 6  # 6,000 addresses: more lines than Windows rules
    assert max(len(line) for line in lines) <= LINE_MAX
    commands = [i for i, line in enumerate(lines) if line.startswith("netsh ")][1:]
    assert all(lines[i + 1] == "if errorlevel 1 goto :failed" for i in commands)
    assert lines[-4:] == [":failed", lines[-3], "exit /b 1", ""]
    assert any("split over more rules" in w for w in result.warnings)


def test_wildcards_in_lists_become_dynamic_keywords() -> None:
    """Issue 17 §2, §5: wildcards were dropped although dynamic keywords take `*.contoso.com`."""
    script = export_windows(ruleset_of(EVAL_DIR.joinpath("names-in-lists.yaml").read_text()),
                            form="powershell").files["outguard-windows.ps1"]
    keywords = {a[a.index("-Keyword") + 1] for a in (parse_ps_line(s) for s in statements(script)
                                         if not s.startswith("#"))
                if "New-NetFirewallDynamicKeywordAddress" in a}
    assert keywords == {"evil.example.test", "*.bad.example.test", "partner.example.test",
                        "*.cdn.example.test", "gone.example.test", "mirror.example.test"}


def test_names_that_differ_only_in_case_do_not_collide() -> None:
    """Issue 17 §5: Windows compares rule names and keywords case-insensitively."""
    result = export_windows(ruleset_of(EVAL_DIR.joinpath("colliding-names.yaml").read_text()),
                            form="powershell")
    parsed = [parse_ps_line(s) for s in statements(result.files["outguard-windows.ps1"])
              if not s.startswith("#")]
    names = [p[p.index("-Name") + 1] for p in parsed if "New-NetFirewallRule" in p]
    assert len({str(n).lower() for n in names}) == len(names) == 8
    ids = [p[p.index("-Id") + 1] for p in parsed if "New-NetFirewallDynamicKeywordAddress" in p]
    assert len(ids) == 1  # API.example.test and api.example.test: one keyword
    assert {f.rule for f in result.fidelity} >= {"deny:Web.API", "deny:web-api", "allow:web_api",
                                                  "allow:WEB-API", "allow:Names", "allow:names"}


def test_options_are_checked() -> None:
    with pytest.raises(ExportError, match="form"):
        export_windows(ruleset("cases"), form="cmd")
    with pytest.raises(ExportError, match="builtin-rules"):
        export_windows(ruleset("cases"), builtin_rules="off")


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("windows", policy, export_windows(ruleset(policy)))
