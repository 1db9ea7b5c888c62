"""The `windows` export target: a PowerShell script for Windows Defender Firewall (and, with
`-o form=netsh` or `all`, the same rules as `netsh advfirewall` commands: `windows_netsh`).

Place in the data flow: `Ruleset` → `view.views` → `WinRule`s → the scripts (+ a remove script).

Windows evaluates block rules before allow rules and blocks outbound by default once
`DefaultOutboundAction Block` is set, which is outguard's order: deny beats allow, then default.
But an *enabled* allow rule of anyone else (Windows' own Core Networking rules, programs'
rules) also allows: with `-o builtin-rules=keep` (the default) they stay, the script lists
them and the report says so; with `disable` the script disables them (and records their names
so that `outguard-windows-remove.ps1` re-enables them).

Every rule is in the group `outguard` and named after its content (`outguard-<rule>-<proto>-
<hash>`): a re-run creates only the rules that are new, then removes the group's rules that are
not in the new policy, so a rule in force never disappears while its replacement is missing
(and names differing only in case, which Windows does not tell apart, cannot collide). The
profile is switched on and its default outbound action set last. Host names and wildcards
(`*.example.test`) become AutoResolve dynamic keywords (Windows build 20348+, filled by
Microsoft Defender's network protection from DNS answers), next to the addresses resolved at
export time; names are compared in lower case, so `API.example.test` and `api.example.test`
are one keyword.

Quoting: every value in the PowerShell script is a single-quoted string, where only the quote
characters (' and its Unicode look-alikes, which PowerShell also accepts) are special and are
doubled; `$()`, backticks, `;` and newlines stay literal.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from outguard.export.common import ExportError
from outguard.export.fidelity import Export
from outguard.export.view import (
    Ledger,
    RuleView,
    chunks,
    common_notes,
    default_note,
    merged,
    port_texts,
    views,
)
from outguard.export.windows_rules import GROUP, WinRule
from outguard.ruleset.ir import Ruleset

PROFILES = "Domain,Private,Public"
MAX_ADDRESSES = 1000  # outguard's own cap per Windows rule, so big lists stay manageable rules
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"  # PowerShell ends a '…' string at any of these
_KEYWORD_NS = uuid.UUID("5b6c7f0e-4c1b-4d51-9a70-6f7574677561")
STATE = "Join-Path $env:ProgramData 'outguard'"
DISABLED_FILE = "disabled-outbound-rules.txt"
FORMS = ("all", "powershell", "netsh")
OPTIONS = {
    "form": "all (default: the PowerShell script and the netsh script), powershell, netsh",
    "builtin-rules": "keep (default: Windows' own enabled outbound allow rules stay in force, "
                     "listed by the script and reported) or disable (the script disables them)",
}
BUILTIN_NOTE = ("Windows' own enabled outbound allow rules (Core Networking: DNS client, DHCP,"
                " and any a program added) stay in force and allow what they match")


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted string literal holding exactly `text`."""
    return "'" + "".join(c + c if c in _PS_QUOTES else c for c in text) + "'"


def ps_list(items: list[str]) -> str:
    return "@(" + ",".join(ps_quote(i) for i in items) + ")"


def keyword_id(name: str) -> str:
    """A stable dynamic-keyword id for a host name or wildcard (case-insensitive), so that
    re-runs find their own keyword."""
    return "{" + str(uuid.uuid5(_KEYWORD_NS, name.lower().rstrip("."))) + "}"


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


def _named(base: str, display: str, action: str, protocol: str, addresses: tuple[str, ...],
           ports: tuple[str, ...], keywords: tuple[str, ...], desc: str) -> WinRule:
    spec = "\n".join([display, action, protocol, *addresses, "|", *ports, "|", *keywords, desc])
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return WinRule(f"{base}-{digest}", display, action, protocol, addresses, ports, keywords, desc)


def _rules_of(view: RuleView, ledger: Ledger, keywords: tuple[str, ...]) -> list[WinRule]:
    rule = view.rule
    action = "Block" if view.deny else "Allow"
    ports = tuple(port_texts(view.ports))
    desc = f"{view.key}: {rule.comment}" if rule.comment else view.key
    display = f"outguard {view.key}"
    out: list[WinRule] = []
    for protocol, family in _protocols(view):
        base = f"outguard-{rule.section}-{re.sub(r'[^a-z0-9_.-]', '_', rule.name.lower())}" \
               f"-{protocol.lower()}"
        if view.any_destination:
            groups: list[tuple[str, ...]] = [()]
        else:
            addrs = [a for a in view.v4 + view.v6
                     if family == 0 or (":" in a) == (family == 6)]
            groups = [tuple(c) for c in chunks(addrs, MAX_ADDRESSES)]
            if len(groups) > 1:
                ledger.warn(f"{view.key}: {len(addrs)} addresses split into {len(groups)} Windows"
                            f" rules of at most {MAX_ADDRESSES}")
        out.extend(_named(base, display, action, protocol, g, ports, (), desc) for g in groups)
        for part in chunks(keywords, MAX_ADDRESSES):
            out.append(_named(f"{base}-names", display, action, protocol, (), ports, tuple(part),
                              desc))
    return out


def win_rules(ruleset: Ruleset, ledger: Ledger, *, keywords: bool) -> tuple[list[WinRule],
                                                                            dict[str, str]]:
    """The Windows rules in policy order, and the dynamic keywords they use (id → name).
    Without `keywords` (the netsh form) names keep only their export-time addresses."""
    rules: list[WinRule] = []
    made: dict[str, str] = {}
    for view in views(ruleset):
        if not common_notes(view, ledger, "Windows Firewall", mode=ruleset.mode):
            continue
        fqdns = list(dict.fromkeys(n.lower().rstrip(".") for n in view.names + view.wildcards))
        ids: tuple[str, ...] = ()
        if fqdns and keywords:
            ledger.approx(view.key, "host names and wildcards as AutoResolve dynamic keywords"
                                    " (" + ", ".join(fqdns) + "): needs Windows build 20348+ with"
                                    " Microsoft Defender network protection, which fills them"
                                    " from the DNS answers it sees")
            ids = tuple(keyword_id(n) for n in fqdns)
            made.update(zip(ids, fqdns, strict=True))
        elif view.names and not keywords:
            ledger.approx(view.key, "netsh has no dynamic keywords: the names keep only their"
                                    " export-time addresses")
        if view.wildcards and not keywords:
            ledger.approx(view.key, "wildcards " + ", ".join(view.wildcards) + " left out: netsh"
                          " has no dynamic keywords")
            if not view.has_addresses and not view.names:
                ledger.drop(view.key, "only wildcard names, which netsh rules cannot hold")
                continue
        if not view.has_addresses and not ids:
            ledger.drop(view.key, "no address to match")
            continue
        rules.extend(_rules_of(view, ledger, ids))
    return rules, made


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
    return f"if ($existing -notcontains {ps_quote(r.name)}) {{ {' '.join(parts)} }}"


_OTHERS = ("$others = @(Get-NetFirewallRule -Direction Outbound -Action Allow -Enabled True"
           f" -ErrorAction SilentlyContinue | Where-Object {{ $_.Group -ne {ps_quote(GROUP)} }})")


def powershell(ruleset: Ruleset, rules: list[WinRule], keywords: dict[str, str],
               builtin: str) -> str:
    lines = [
        f"# outguard policy {ruleset.policy_digest[:12]} for Windows Defender Firewall"
        " (generated; run it again to replace the rules of an earlier run).",
        "#Requires -RunAsAdministrator",
        "$ErrorActionPreference = 'Stop'",
        f"$existing = @(Get-NetFirewallRule -Group {ps_quote(GROUP)} -ErrorAction SilentlyContinue"
        " | ForEach-Object { $_.Name })",
    ]
    for kid, name in keywords.items():
        lines.append(f"if (-not (Get-NetFirewallDynamicKeywordAddress -Id {ps_quote(kid)}"
                     " -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress"
                     f" -Id {ps_quote(kid)} -Keyword {ps_quote(name)} -AutoResolve $true"
                     " | Out-Null }")
    lines.extend(_ps_rule(r) for r in rules)  # block rules first: deny is in force before allow
    lines.append(f"$keep = {ps_list([r.name for r in rules])}")
    lines.append(f"Get-NetFirewallRule -Group {ps_quote(GROUP)} -ErrorAction SilentlyContinue |"
                 " Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule")
    lines.append(_OTHERS)
    if builtin == "disable":
        lines.append(f"$state = {STATE}")
        lines.append("New-Item -ItemType Directory -Force -Path $state | Out-Null")
        lines.append(f"$others | ForEach-Object {{ $_.Name }} | Add-Content -Path (Join-Path"
                     f" $state {ps_quote(DISABLED_FILE)})")
        lines.append("$others | Disable-NetFirewallRule")
        lines.append("Write-Host ('outguard: disabled ' + $others.Count + ' outbound allow rules'"
                     " + ' of Windows and other programs (outguard-windows-remove.ps1 re-enables"
                     " them)')")
    else:
        lines.append("if ($others.Count) { Write-Warning ('outguard: ' + $others.Count + ' enabled"
                     " outbound allow rules of Windows and other programs stay in force and allow"
                     " what they match: ' + (($others | ForEach-Object { $_.DisplayName }) -join"
                     " '; ')) }")
    # last, so that a session is not cut off before its allow rules exist
    outbound = "Allow -LogAllowed True" if ruleset.mode == "audit" else "Block"
    lines.append(f"Set-NetFirewallProfile -Profile {PROFILES} -Enabled True"
                 f" -DefaultOutboundAction {outbound} -LogBlocked True")
    return "\n".join(lines) + "\n"


def remove_script(ruleset: Ruleset) -> str:
    return "\n".join([
        f"# Remove what outguard-windows.ps1 (policy {ruleset.policy_digest[:12]} or any other)"
        " added: the rules of group 'outguard', its dynamic keywords' rules, and re-enable the"
        " allow rules it disabled. Outbound is allowed by default again afterwards.",
        "#Requires -RunAsAdministrator",
        "$ErrorActionPreference = 'Stop'",
        f"Get-NetFirewallRule -Group {ps_quote(GROUP)} -ErrorAction SilentlyContinue |"
        " Remove-NetFirewallRule",
        f"$file = Join-Path ({STATE}) {ps_quote(DISABLED_FILE)}",
        "if (Test-Path $file) { Get-Content $file | Sort-Object -Unique | ForEach-Object {"
        " Enable-NetFirewallRule -Name $_ -ErrorAction SilentlyContinue }; Remove-Item $file }",
        f"Set-NetFirewallProfile -Profile {PROFILES} -DefaultOutboundAction Allow",
    ]) + "\n"


def _check(form: str, builtin: str) -> None:
    if form not in FORMS:
        raise ExportError(f"option form={form!r}: choose one of {', '.join(FORMS)}")
    if builtin not in ("keep", "disable"):
        raise ExportError(f"option builtin-rules={builtin!r}: choose keep or disable")


def export_windows(ruleset: Ruleset, form: str = "all", builtin_rules: str = "keep") -> Export:
    """The Windows export: the forms `form` asks for, one merged fidelity report."""
    from outguard.export.windows_netsh import netsh  # noqa: PLC0415  (a module of its own)

    _check(form, builtin_rules)
    files: dict[str, str] = {}
    forms: list[tuple[str, Ledger]] = []
    if form in ("all", "powershell"):
        ledger = Ledger()
        rules, keywords = win_rules(ruleset, ledger, keywords=True)
        default_note(ruleset, ledger, "Windows Firewall", logs="the firewall log (pfirewall.log)")
        if builtin_rules == "keep" and ruleset.mode != "audit":
            ledger.approx("default", BUILTIN_NOTE + "; the script lists them (`-o builtin-rules="
                                     "disable` disables them)")
        files["outguard-windows.ps1"] = powershell(ruleset, rules, keywords, builtin_rules)
        files["outguard-windows-remove.ps1"] = remove_script(ruleset)
        forms.append(("PowerShell", ledger))
    if form in ("all", "netsh"):
        ledger = Ledger()
        rules, _keywords = win_rules(ruleset, ledger, keywords=False)
        default_note(ruleset, ledger, "Windows Firewall", logs="the firewall log (pfirewall.log)")
        if ruleset.mode != "audit":
            ledger.approx("default", BUILTIN_NOTE + " (netsh cannot select them: the PowerShell"
                                     " form can disable them)")
        files["outguard-windows-netsh.cmd"] = netsh(ruleset, rules, ledger)
        forms.append(("netsh", ledger))
    order = [v.key for v in views(ruleset)] + ["default"]
    fidelity, warnings = merged(forms, order)
    return Export("windows", files, fidelity, warnings)
