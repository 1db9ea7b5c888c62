"""What an export target says about each rule it translated: exact, approximated, or dropped.

Every exporter (iptables, ufw, windows, aws, azure, gcp, k8s) returns an `Export`: the files it
produced and one `RuleFidelity` per IR rule. `outguard compile --target T` prints the report
to stderr; `--strict` fails when any rule is not exact. This module is pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["exact", "approximated", "dropped"]


@dataclass(frozen=True)
class RuleFidelity:
    rule: str  # "allow:web-api", "deny:attacker-net", or "default" for the default verdict
    level: Level
    how: str = ""  # for approximated: what the target does instead; for dropped: why


@dataclass
class Export:
    target: str
    files: dict[str, str]  # file name → content, in the order a user applies them
    fidelity: list[RuleFidelity] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(item.level == "exact" for item in self.fidelity)

    def report(self) -> str:
        lines = [f"{self.target}: {len(self.fidelity)} rules"]
        for item in self.fidelity:
            tail = f" — {item.how}" if item.how else ""
            lines.append(f"  {item.level:<12} {item.rule}{tail}")
        lines.extend(f"  warning: {text}" for text in self.warnings)
        return "\n".join(lines)
