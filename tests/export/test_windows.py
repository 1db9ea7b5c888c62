"""The `windows` target: golden files for the shared policies, the fidelity it reports, and the
PowerShell quoting against hostile rule names and comments.

`pwsh` is not installable on this machine (not in Debian, and its own downloads are not
reachable), so the quoting is checked by `parse_ps_line`, a tokenizer written here to the
PowerShell language spec for what the script uses: single-quoted strings ('' is one quote, and
the Unicode quotes U+2018-U+201B count as quotes), `@(…)` lists of them, bare words, `|`, `{}`.
A hostile value passes when every line still tokenizes into the same command and arguments and
each string decodes back to exactly the value written.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from outguard.export.windows import GROUP, cmd_safe, export_windows, ps_quote
from outguard.ruleset.ir import Ruleset
from tests.export.cloud_inputs import check_export, policy_names, ruleset, ruleset_of

QUOTES = "'\u2018\u2019\u201a\u201b"
HOSTILE = [
    "it's", "a''b", "`whoami`", "$(Remove-Item C:\\ -Recurse)", "x'; Remove-Item C:\\; '",
    "line1\nline2", "semi;colon", '"double"', "\u2019smart\u2018 quotes\u201b", "$env:PATH",
    "@(1,2)", "end'", "'", "tab\there", "# not a comment", "x' -Action 'Allow",
]


def parse_single_quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the '…' string at text[start] and the index after it."""
    assert text[start] in QUOTES
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch in QUOTES:
            if i + 1 < len(text) and text[i + 1] in QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise AssertionError(f"unterminated string at {start}")


def parse_ps_line(text: str) -> list[str | list[str]]:
    """Tokens of one PowerShell statement: words, strings (decoded) and @('…',…) lists."""
    tokens: list[str | list[str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == " ":
            i += 1
        elif ch in QUOTES:
            value, i = parse_single_quoted(text, i)
            tokens.append(value)
        elif text.startswith("@(", i):
            items: list[str] = []
            i += 2
            while text[i] != ")":
                value, i = parse_single_quoted(text, i)
                items.append(value)
                if text[i] == ",":
                    i += 1
            tokens.append(items)
            i += 1
        else:
            end = i
            while end < len(text) and text[end] != " ":
                assert text[end] not in QUOTES + '"`;\n', f"unquoted special {text[end]!r}"
                end += 1
            tokens.append(text[i:end])
            i = end
    return tokens


def statements(script: str) -> list[str]:
    """Split a script into statements at newlines that are outside single-quoted strings."""
    out, current, i = [], [], 0
    while i < len(script):
        ch = script[i]
        if ch in QUOTES:
            _, end = parse_single_quoted(script, i)
            current.append(script[i:end])
            i = end
        elif ch == "\n":
            out.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    assert not current
    return out


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
    commands = [p[0] for p in parsed]
    assert commands == ["$ErrorActionPreference", "Remove-NetFirewallRule", "New-NetFirewallRule",
                        "Remove-NetFirewallRule", "New-NetFirewallRule", "$keep",
                        "Get-NetFirewallRule", "Set-NetFirewallProfile"]
    new = [p for p in parsed if p[0] == "New-NetFirewallRule"]
    for tokens, section, action in zip(new, ("deny", "allow"), ("Block", "Allow"), strict=True):
        args = dict(zip(tokens[1::2], tokens[2::2], strict=False))
        name = "bad" if section == "deny" else "web"
        assert args["-DisplayName"] == f"outguard {section}:{name}{value}"
        assert args["-Description"] == f"{section}:{name}{value}: c{value}"
        assert args["-Name"].startswith(f"outguard-{section}-{name}{value}-")
        assert args["-Action"] == action and args["-Group"] == GROUP
        assert args["-Direction"] == "Outbound"
    netsh = export.files["outguard-windows-netsh.cmd"]
    for line in netsh.split("\r\n")[4:-3]:
        desc = line.split('description="', 1)[1]
        assert desc.endswith('"') and '"' not in desc[:-1] and "%" not in desc


def test_cmd_safe_keeps_only_a_safe_alphabet() -> None:
    assert cmd_safe('a"b%PATH%^&|<>\nc') == "a_b_PATH_______c"


def test_default_outbound_block_comes_last_and_profiles_all() -> None:
    script = export_windows(ruleset("lab-policy")).files["outguard-windows.ps1"]
    lines = script.splitlines()
    assert lines[-1].startswith("Set-NetFirewallProfile -Profile Domain,Private,Public"
                                " -DefaultOutboundAction Block")
    assert all("-Profile Domain,Private,Public" in line and "-Direction Outbound" in line
               for line in lines if line.startswith("New-NetFirewallRule"))


def test_fidelity_for_owner_rules() -> None:
    export = export_windows(ruleset("lab-policy"))
    by_rule = {f.rule: f for f in export.fidelity}
    assert by_rule["allow:backup-as-nobody"].level == "dropped"
    assert "uid 65534" in by_rule["allow:backup-as-nobody"].how
    assert by_rule["allow:web-api"].level == "exact"
    assert by_rule["default"].level == "exact"
    assert not export.exact


@pytest.mark.parametrize("policy", policy_names())
def test_golden(policy: str) -> None:
    check_export("windows", policy, export_windows(ruleset(policy)))
