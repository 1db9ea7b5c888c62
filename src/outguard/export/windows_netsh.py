"""The netsh half of the `windows` target: the rules as `netsh advfirewall` commands in a .cmd
file, for hosts without PowerShell's NetSecurity module.

Place in the data flow: `windows.win_rules` (without dynamic keywords: netsh has none) → here.

cmd.exe runs a line of at most 8,191 characters (longer ones are cut or refused), so a rule's
addresses are split over as many `add rule` lines as needed (each line is one more Windows rule
of the same action: for a firewall where any block wins and any allow allows, the union is the
same). Every command is checked (`if errorlevel 1`): the first that fails stops the script with
exit code 1 before the default outbound action is changed. cmd.exe has no safe quoting for
arbitrary text (`%` expands even inside quotes), so descriptions keep only a safe alphabet.
All rules are named "outguard": the first command removes an earlier run's rules, so for a
moment only Windows' other rules and the earlier default hold (block, after an earlier run).
"""

from __future__ import annotations

from outguard.export.view import Ledger
from outguard.export.windows_rules import GROUP, WinRule, cmd_safe
from outguard.ruleset.ir import Ruleset

LINE_MAX = 8191  # cmd.exe's longest command line
LINE_BUDGET = 8000  # what outguard fills, with room for the error check's redirections
FAILED = ["if errorlevel 1 goto :failed"]


def _head(r: WinRule) -> str:
    parts = [f'netsh advfirewall firewall add rule name="{GROUP}" dir=out',
             f"action={r.action.lower()} profile=domain,private,public",
             f"protocol={r.protocol.lower()}"]
    if r.ports:
        parts.append("remoteport=" + ",".join(r.ports))
    return " ".join(parts)


def rule_lines(r: WinRule) -> list[str]:
    """The `add rule` lines of one Windows rule, each shorter than LINE_BUDGET."""
    head = _head(r)
    tail = f' description="{cmd_safe(r.description)[:200]}"'
    if not r.addresses:
        return [head + tail]
    out: list[str] = []
    current: list[str] = []
    room = LINE_BUDGET - len(head) - len(tail) - len(" remoteip=")
    used = 0
    for addr in r.addresses:
        cost = len(addr) + (1 if current else 0)
        if current and used + cost > room:
            out.append(f"{head} remoteip={','.join(current)}{tail}")
            current, used, cost = [], 0, len(addr)
        current.append(addr)
        used += cost
    out.append(f"{head} remoteip={','.join(current)}{tail}")
    return out


def netsh(ruleset: Ruleset, rules: list[WinRule], ledger: Ledger) -> str:
    lines = [
        "@echo off",
        f"rem outguard policy {ruleset.policy_digest[:12]} as netsh advfirewall commands (run as"
        " Administrator).",
        f'rem Every rule is named "{GROUP}", so the first command removes the previous run\'s rules.',
        "rem Each command is checked: the first that fails stops the script (exit code 1) before"
        " the default outbound action is set.",
        f'netsh advfirewall firewall delete rule name="{GROUP}" dir=out >nul 2>&1',
    ]
    split = 0
    for r in rules:
        if r.keywords:
            continue  # netsh has no dynamic keywords (`win_rules` left them out)
        parts = rule_lines(r)
        split += len(parts) - 1
        for line in parts:
            lines += [line, *FAILED]
    if split:
        ledger.warn(f"{split} netsh lines would be longer than cmd.exe's {LINE_MAX} characters:"
                    " their addresses are split over more rules of the same action")
    if any(cmd_safe(r.description) != r.description for r in rules):
        ledger.warn("netsh descriptions keep only letters, digits and _.,:/@+=()[]#- (cmd.exe"
                    " cannot quote the rest); the PowerShell script has them as written")
    outbound = "allowoutbound" if ruleset.mode == "audit" else "blockoutbound"
    lines.append("rem netsh sets both directions at once; inbound stays Windows' default, block.")
    lines += [f"netsh advfirewall set allprofiles firewallpolicy blockinbound,{outbound}", *FAILED]
    lines += ["netsh advfirewall set allprofiles state on", *FAILED]
    lines += [f"echo outguard policy {ruleset.policy_digest[:12]} applied", "exit /b 0",
              ":failed",
              "echo outguard: a netsh command failed (above); the default outbound action was not"
              " changed 1>&2",
              "exit /b 1"]
    return "\r\n".join(lines) + "\r\n"
