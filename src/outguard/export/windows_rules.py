"""A Windows Defender Firewall rule as data, and what cmd.exe passes unchanged: shared by the
PowerShell form (`windows`) and the netsh form (`windows_netsh`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "outguard"


def cmd_safe(text: str) -> str:
    """Text cmd.exe passes through unchanged inside "…": no %, ", ^, &, |, <, >, controls."""
    return re.sub(r"[^A-Za-z0-9 _.,:/@+=()\[\]#-]", "_", text)


@dataclass(frozen=True)
class WinRule:
    name: str  # -Name: unique, from the content: stable across runs of the same export
    display: str  # "outguard allow:web-api": the fidelity key after "outguard "
    action: str  # Block | Allow
    protocol: str  # TCP | UDP | ICMPv4 | ICMPv6 | Any
    addresses: tuple[str, ...]  # () = Any
    ports: tuple[str, ...]  # () = Any
    keywords: tuple[str, ...]  # dynamic keyword ids instead of addresses
    description: str
