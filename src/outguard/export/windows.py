"""The `windows` export target: a PowerShell script for Windows Defender Firewall, and the same
rules as `netsh advfirewall` commands for hosts without the NetSecurity module.

Place in the data flow: `Ruleset` → `view.views` → `WinRule`s → the two scripts.

Windows evaluates block rules before allow rules and blocks outbound by default once
`DefaultOutboundAction Block` is set, which is outguard's order: deny beats allow, then default.
Every rule is in the group `outguard`; a re-run creates or replaces each rule by its `-Name`
and then removes the group's rules that are not in the new policy, so nothing else is touched.
Host names become AutoResolve dynamic keywords (Windows build 20348+, filled by Microsoft
Defender's network protection); the netsh form has no such thing and keeps the addresses
resolved at export time.

Quoting: every value in the PowerShell script is a single-quoted string, where only the quote
characters (' and its Unicode look-alikes, which PowerShell also accepts) are special and are
doubled; `$()`, backticks, `;` and newlines stay literal. cmd.exe has no safe quoting for
arbitrary text (`%` expands even inside quotes), so the netsh file keeps only a safe alphabet.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from outguard.export.fidelity import Export
from outguard.export.view import Ledger, RuleView, chunks, common_notes, default_note, port_texts, views
from outguard.ruleset.ir import Ruleset

GROUP = "outguard"
PROFILES = "Domain,Private,Public"
MAX_ADDRESSES = 1000  # outguard's own cap per Windows rule, so big lists stay manageable rules
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"  # PowerShell ends a '…' string at any of these
_KEYWORD_NS = uuid.UUID("5b6c7f0e-4c1b-4d51-9a70-6f7574677561")


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted string literal holding exactly `text`."""
    return "'" + "".join(c + c if c in _PS_QUOTES else c for c in text) + "'"


def ps_list(items: list[str]) -> str:
    return "@(" + ",".join(ps_quote(i) for i in items) + ")"


def cmd_safe(text: str) -> str:
    """Text cmd.exe passes through unchanged inside "…": no %, ", ^, &, |, <, >, controls."""
    return re.sub(r"[^A-Za-z0-9 _.,:/@+=()\[\]#-]", "_", text)


def keyword_id(name: str) -> str:
    """A stable dynamic-keyword id for a host name, so re-runs find their own keyword."""
    return "{" + str(uuid.uuid5(_KEYWORD_NS, name)) + "}"


@dataclass(frozen=True)
class WinRule:
    name: str  # -Name: unique, stable across runs
    display: str
    action: str  # Block | Allow
    protocol: str  # TCP | UDP | ICMPv4 | ICMPv6 | Any
    addresses: tuple[str, ...]  # () = Any
    ports: tuple[str, ...]  # () = Any
    keywords: tuple[str, ...]  # dynamic keyword ids instead of addresses
    description: str


def _protocols(view: RuleView) -> list[tuple[str, int]]:
    """(Windows protocol, address family or 0 for both)."""
    if view.proto == "tcp":
        return [("TCP", 0)]
    if view.proto == "udp":
        return [("UDP", 0)]
    if view.proto == "icmp":
        return [("ICMPv4", 4), ("ICMPv6", 6)]
    # ports only exist for tcp and udp: a port rule of any protocol is exactly these two
    return [("TCP", 0), ("UDP", 0)] if view.ports else [("Any", 0)]


def _rules_of(view: RuleView, ledger: Ledger) -> list[WinRule]:
    rule = view.rule
    action = "Block" if view.deny else "Allow"
    ports = tuple(port_texts(view.ports))
    desc = f"{view.key}: {rule.comment}" if rule.comment else view.key
    out: list[WinRule] = []
    for protocol, family in _protocols(view):
        base = f"outguard-{rule.section}-{rule.name}-{protocol.lower()}"
        if view.any_destination:
            groups: list[tuple[str, ...]] = [()]
        else:
            addrs = [a for a in view.v4 + view.v6
                     if family == 0 or (":" in a) == (family == 6)]
            groups = [tuple(c) for c in chunks(addrs, MAX_ADDRESSES)]
            if len(groups) > 1:
                ledger.warn(f"{view.key}: {len(addrs)} addresses split into {len(groups)} Windows"
                            f" rules of at most {MAX_ADDRESSES}")
        for i, group in enumerate(groups):
            out.append(WinRule(f"{base}-{i}" if i else base, f"outguard {view.key}", action,
                               protocol, group, ports, (), desc))
        if view.names:
            out.append(WinRule(f"{base}-fqdn", f"outguard {view.key} (names)", action, protocol,
                               (), ports, tuple(keyword_id(n) for n in view.names), desc))
    return out


def win_rules(ruleset: Ruleset, ledger: Ledger) -> tuple[list[WinRule], list[str]]:
    """The Windows rules in policy order, and the host names that need dynamic keywords."""
    rules: list[WinRule] = []
    names: dict[str, None] = {}
    for view in views(ruleset):
        if not common_notes(view, ledger, "Windows Firewall", mode=ruleset.mode):
            continue
        if view.names:
            ledger.approx(view.key, "host names as AutoResolve dynamic keywords: needs Windows"
                                    " build 20348+ with Microsoft Defender network protection")
            names.update(dict.fromkeys(view.names))
        if view.wildcards:
            ledger.approx(view.key, "wildcards " + ", ".join(view.wildcards) + " left out: outguard"
                          " exports only single names as Windows dynamic keywords")
            if not view.has_addresses and not view.names:
                ledger.drop(view.key, "only wildcard names, which Windows rules cannot hold")
                continue
        rules.extend(_rules_of(view, ledger))
    return rules, list(names)


def _ps_rule(r: WinRule) -> str:
    parts = ["New-NetFirewallRule", "-Name", ps_quote(r.name), "-DisplayName", ps_quote(r.display),
             "-Group", ps_quote(GROUP), "-Direction", "Outbound", "-Action", r.action,
             "-Profile", PROFILES, "-Protocol", r.protocol]
    if r.keywords:
        parts += ["-RemoteDynamicKeywordAddresses", ps_list(list(r.keywords))]
    elif r.addresses:
        parts += ["-RemoteAddress", ps_list(list(r.addresses))]
    if r.ports:
        parts += ["-RemotePort", ps_list(list(r.ports))]
    parts += ["-Description", ps_quote(r.description), "| Out-Null"]
    return " ".join(parts)


def powershell(ruleset: Ruleset, rules: list[WinRule], names: list[str]) -> str:
    lines = [
        f"# outguard policy {ruleset.policy_digest[:12]} for Windows Defender Firewall"
        " (generated; re-run to replace).",
        "#Requires -RunAsAdministrator",
        "$ErrorActionPreference = 'Stop'",
    ]
    for name in names:
        kid = ps_quote(keyword_id(name))
        lines.append(f"if (-not (Get-NetFirewallDynamicKeywordAddress -Id {kid}"
                     " -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress"
                     f" -Id {kid} -Keyword {ps_quote(name)} -AutoResolve $true | Out-Null }}")
    for r in rules:
        lines.append(f"Remove-NetFirewallRule -Name {ps_quote(r.name)} -ErrorAction SilentlyContinue")
        lines.append(_ps_rule(r))
    lines.append(f"$keep = {ps_list([r.name for r in rules])}")
    lines.append(f"Get-NetFirewallRule -Group {ps_quote(GROUP)} -ErrorAction SilentlyContinue |"
                 " Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule")
    if ruleset.mode == "audit":
        lines.append(f"Set-NetFirewallProfile -Profile {PROFILES} -DefaultOutboundAction Allow"
                     " -LogAllowed True -LogBlocked True")
    else:
        # last, so that a session is not cut off before its allow rules exist
        lines.append(f"Set-NetFirewallProfile -Profile {PROFILES} -DefaultOutboundAction Block"
                     " -LogBlocked True")
    return "\n".join(lines) + "\n"


def _netsh_rule(r: WinRule, addresses: tuple[str, ...]) -> str:
    parts = [f'netsh advfirewall firewall add rule name="{GROUP}" dir=out',
             f"action={r.action.lower()} profile=domain,private,public",
             f"protocol={r.protocol.lower()}"]
    if addresses:
        parts.append("remoteip=" + ",".join(addresses))
    if r.ports:
        parts.append("remoteport=" + ",".join(r.ports))
    parts.append(f'description="{cmd_safe(r.description)[:200]}"')
    return " ".join(parts)


def netsh(ruleset: Ruleset, rules: list[WinRule]) -> str:
    lines = [
        "@echo off",
        f"rem outguard policy {ruleset.policy_digest[:12]} as netsh advfirewall commands.",
        f'rem Every rule is named "{GROUP}", so the first command removes the previous run\'s rules.',
        f'netsh advfirewall firewall delete rule name="{GROUP}" dir=out >nul 2>&1',
    ]
    for r in rules:
        if r.keywords:
            continue  # the address rule next to it already holds the export-time addresses
        lines.append(_netsh_rule(r, r.addresses))
    outbound = "allowoutbound" if ruleset.mode == "audit" else "blockoutbound"
    lines.append("rem netsh sets both directions at once; inbound stays Windows' default, block.")
    lines.append(f"netsh advfirewall set allprofiles firewallpolicy blockinbound,{outbound}")
    return "\r\n".join(lines) + "\r\n"


def export_windows(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    rules, names = win_rules(ruleset, ledger)
    for view in views(ruleset):
        if view.names and ledger.level(view.key) != "dropped":
            ledger.approx(view.key, "the netsh form keeps only the export-time addresses")
    default_note(ruleset, ledger, "Windows Firewall", logs="the firewall log (pfirewall.log)")
    if any(cmd_safe(r.description) != r.description for r in rules):
        ledger.warn("netsh descriptions keep only letters, digits and _.,:/@+=()[]#- (cmd.exe"
                    " cannot quote the rest); the PowerShell script has them as written")
    files = {"outguard-windows.ps1": powershell(ruleset, rules, names),
             "outguard-windows-netsh.cmd": netsh(ruleset, rules)}
    return Export("windows", files, ledger.fidelity(), ledger.warnings)
