"""Evaluator of the `windows` export: Windows Defender Firewall's outbound semantics, modelled.

`pwsh` and Windows are not installable here, so the scripts are read as Windows would run
them: `parse_ps_line` tokenizes PowerShell to the language spec for what the script uses
(single-quoted strings, where '' is one quote and U+2018-U+201B count as quotes; `@(…)` lists
of them; bare words), and the netsh file is split into `key=value` words. The model
(Microsoft Learn: "Windows Firewall rules", "Configure rules with PowerShell", "Firewall
dynamic keywords", netsh advfirewall reference):

- the firewall filters only when the profile is enabled (`Set-NetFirewallProfile -Enabled
  True`, `netsh advfirewall set allprofiles state on`); this model starts disabled, as a
  machine where someone turned it off;
- an outbound packet is blocked when any enabled **block** rule matches; else allowed when any
  enabled **allow** rule matches; else the profile's **default outbound action** decides (this
  model starts at Windows' default, Allow); rule order does not matter;
- a rule matches on protocol (TCP, UDP, ICMPv4, ICMPv6 or Any), remote addresses (any when
  none; CIDRs), remote ports (TCP/UDP; any when none), and dynamic keyword addresses: an
  AutoResolve keyword holds the addresses network protection saw in DNS answers for its name,
  so it matches a probe that resolved a name equal to the keyword or, for `*.domain`, any name
  below it (Microsoft documents `*.contoso.com`; below at any depth is assumed here); a probe
  without a name never matches a keyword;
- Windows' own enabled outbound allow rules (BUILTIN_ALLOWS: Core Networking's DNS and DHCP
  rules; the DNS rule is the DNS client service's, through which every program resolves, so
  it is modelled as allowing UDP 53 to every address) allow, unless the script disabled the
  enabled outbound allow rules not in group outguard;
- Windows cannot reject: a blocked packet is dropped.

The deciding rule is read from the display name (`outguard allow:x`) or the netsh description
(`allow:x: comment`); built-in rules decide as `builtin:windows` (no report line: a difference
they make must be named by `decide`'s rule, i.e. `default`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from outguard.export.fidelity import Export
from tests.export.evaluators import Evaluate, Outcome, Probe

QUOTES = "'\u2018\u2019\u201a\u201b"
BUILTIN_ALLOWS = (("UDP", (53, 53)), ("UDP", (67, 67)), ("UDP", (547, 547)))


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
        elif text.startswith("@(", i) and i + 2 < len(text) and text[i + 2] in QUOTES + ")":
            items: list[str] = []
            i += 2
            while text[i] != ")":
                value, i = parse_single_quoted(text, i)
                items.append(value)
                if text[i] == ",":
                    i += 1
            tokens.append(items)
            i += 1
        elif ch in "()":
            tokens.append(ch)
            i += 1
        else:
            end = i
            while end < len(text) and text[end] not in " ()":
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


@dataclass
class FwRule:
    key: str | None
    block: bool
    protocol: str
    addresses: list[str] = field(default_factory=list)
    ports: list[tuple[int, int]] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # names ("*.x" for wildcards)

    def matches(self, p: Probe) -> bool:
        proto = {"tcp": "TCP", "udp": "UDP"}.get(p.proto) or (
            "ICMPv6" if ":" in p.dst else "ICMPv4")
        if self.protocol not in ("ANY", proto.upper()):
            return False
        if self.ports and (p.port is None or not any(lo <= p.port <= hi for lo, hi in self.ports)):
            return False
        if self.keywords:
            return p.name is not None and any(_name_in(p.name, k) for k in self.keywords)
        if not self.addresses:
            return True
        ip = ipaddress.ip_address(p.dst)
        return any(ip.version == n.version and ip in n
                   for n in (ipaddress.ip_network(a, strict=False) for a in self.addresses))


def _name_in(name: str, keyword: str) -> bool:
    name, keyword = name.lower().rstrip("."), keyword.lower().rstrip(".")
    if keyword.startswith("*."):
        return name.endswith(keyword[1:]) and len(name) > len(keyword) - 1
    return name == keyword


def _ports(texts: list[str]) -> list[tuple[int, int]]:
    out = []
    for t in texts:
        lo, _, hi = t.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


@dataclass
class Machine:
    rules: list[FwRule] = field(default_factory=list)
    enabled: bool = False
    default_block: bool = False
    builtin: bool = True

    def decide(self, p: Probe) -> Outcome:
        if not self.enabled:
            return Outcome("accept", None, "firewall off")
        for r in self.rules:
            if r.block and r.matches(p):
                return Outcome("drop", r.key)
        for r in self.rules:
            if not r.block and r.matches(p):
                return Outcome("accept", r.key)
        if self.builtin and p.proto in ("tcp", "udp") and p.port is not None and any(
                p.proto.upper() == proto and lo <= p.port <= hi for proto, (lo, hi) in BUILTIN_ALLOWS):
            return Outcome("accept", "builtin:windows", "a built-in Core Networking rule")
        return Outcome("drop" if self.default_block else "accept", "default")


def _args(tokens: list[str | list[str]], start: int) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    i = start + 1
    while i + 1 < len(tokens) and tokens[i] not in ("|", "}"):
        key = tokens[i]
        assert isinstance(key, str) and key.startswith("-"), f"not a parameter: {key!r}"
        out[key] = tokens[i + 1]
        i += 2
    return out


def _listed(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return value if isinstance(value, list) else value.split(",")


def powershell_machine(script: str) -> Machine:
    m = Machine()
    keywords: dict[str, str] = {}
    for stmt in statements(script):
        if stmt.startswith("#") or not stmt.strip():
            continue
        tokens = parse_ps_line(stmt)
        words = [t for t in tokens if isinstance(t, str)]
        if "New-NetFirewallDynamicKeywordAddress" in words:
            a = _args(tokens, tokens.index("New-NetFirewallDynamicKeywordAddress"))
            assert a.get("-AutoResolve") == "$true"
            keywords[str(a["-Id"])] = str(a["-Keyword"])
        elif "New-NetFirewallRule" in words:
            a = _args(tokens, tokens.index("New-NetFirewallRule"))
            assert a["-Direction"] == "Outbound" and a["-Group"] == "outguard"
            assert a["-Profile"] == "Domain,Private,Public"
            display = str(a["-DisplayName"])
            ids = _listed(a.get("-RemoteDynamicKeywordAddresses"))
            m.rules.append(FwRule(display.removeprefix("outguard "), a["-Action"] == "Block",
                                  str(a["-Protocol"]).upper(), _listed(a.get("-RemoteAddress")),
                                  _ports(_listed(a.get("-RemotePort"))),
                                  [keywords[i] for i in ids]))
        elif "Disable-NetFirewallRule" in words and words[0] == "$others":
            m.builtin = False
        elif words[0] == "Set-NetFirewallProfile":
            a = _args(tokens, 0)
            assert a["-Profile"] == "Domain,Private,Public"
            m.enabled = a.get("-Enabled", "") == "True" or m.enabled
            m.default_block = a["-DefaultOutboundAction"] == "Block"
    return m


def netsh_machine(script: str) -> Machine:
    m = Machine()
    for line in script.split("\r\n"):
        assert len(line) <= 8191, f"a line of {len(line)} characters: cmd.exe stops at 8,191"
        if line.startswith("netsh advfirewall firewall add rule "):
            words = dict(w.split("=", 1) for w in line.split(' description="')[0].split()
                         if "=" in w)
            desc = line.split(' description="', 1)[1].rstrip('"')
            key = desc.split(": ", 1)[0]
            assert words["dir"] == "out" and words["profile"] == "domain,private,public"
            m.rules.append(FwRule(key, words["action"] == "block", words["protocol"].upper(),
                                  _listed(words.get("remoteip")),
                                  _ports(_listed(words.get("remoteport")))))
        elif line.startswith("netsh advfirewall set allprofiles firewallpolicy "):
            m.default_block = line.rsplit(",", 1)[1] == "blockoutbound"
        elif line == "netsh advfirewall set allprofiles state on":
            m.enabled = True
    return m


def powershell(export: Export, probes: Sequence[Probe]) -> list[Outcome]:
    m = powershell_machine(export.files["outguard-windows.ps1"])
    return [m.decide(p) for p in probes]


def netsh(export: Export, probes: Sequence[Probe]) -> list[Outcome]:
    m = netsh_machine(export.files["outguard-windows-netsh.cmd"])
    return [m.decide(p) for p in probes]


FORMS: dict[str, tuple[dict[str, str], Evaluate]] = {
    "powershell": ({"form": "powershell"}, powershell),
    "powershell-disable": ({"form": "powershell", "builtin-rules": "disable"}, powershell),
    "netsh": ({"form": "netsh"}, netsh),
    "all-powershell": ({}, powershell),  # both forms in one export: one merged report
    "all-netsh": ({}, netsh),
}
