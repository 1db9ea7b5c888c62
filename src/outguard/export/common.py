"""Pieces the netfilter exporters (iptables, ufw) share: safe text, address checks, notes.

Place in the data flow: IR (`ruleset.ir.Ruleset`) → `export.iptables` / `export.ufw` → files.
The IR normally comes from a validated policy, but exporters write into formats with their own
syntax (iptables-restore, ipset restore, shell), so every piece of text that reaches them is
checked or reduced here once more: nothing from a rule name, comment or address can end a
quoted string, start a new line or a new command.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from outguard.errors import OutguardError

# The NFLOG prefix (`og:deny:x`, `og:default reject`, `og:deny:x audit`) that outguard's monitor
# reads back: one definition for the nftables backend and the exports.
from outguard.events import render_prefix as log_prefix
from outguard.export.names import name_notes
from outguard.ruleset.ir import IRRule, Ruleset

_NAME_OK = re.compile(r"[A-Za-z0-9_.-]{1,48}")
_TEXT_BAD = re.compile(r"[^A-Za-z0-9 _.,:;/@+=()\[\]-]")
# Every address or prefix text the IR may carry; nothing else reaches an ipset or ufw line.
_ADDR_OK = re.compile(r"[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3})?")
_CGROUP_OK = re.compile(r"[A-Za-z0-9_.@:/+-]{1,200}")


class ExportError(OutguardError):
    """The IR holds something an export target cannot write safely (names the rule)."""


def safe_name(name: str) -> str:
    """A rule name as exporters write it: the policy's name charset, else '_' for each other
    character (a policy that loads never needs this; an IR built by hand might)."""
    if _NAME_OK.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:48]
    return cleaned or "_"


def safe_text(text: str, limit: int = 200) -> str:
    """Free text (a comment) reduced to characters no target gives a meaning to."""
    return _TEXT_BAD.sub("_", text)[:limit]


def check_addr(text: str, where: str) -> str:
    if not _ADDR_OK.fullmatch(text):
        raise ExportError(f"{where}: {text!r} is not an IP address or prefix")
    return text


def check_cgroup(path: str, where: str) -> str:
    if not _CGROUP_OK.fullmatch(path) or ".." in path.split("/"):
        raise ExportError(f"{where}: {path!r} is not a cgroup path")
    return path


def dns_warnings(rs: Ruleset) -> list[str]:
    """The policy's `dns:` section (DNS only through outguard's resolver, which fills name
    sets) has no equivalent in a static export."""
    if getattr(rs, "dns", None) is None:
        return []
    return ["the dns: section is not exported: DNS is not forced through outguard's resolver, "
            "and host names are resolved at export time (their addresses go stale)"]


def has_destination(rs: Ruleset, rule: IRRule) -> bool:
    """Whether the rule can match any address at all (a wildcard-only rule cannot)."""
    if rule.any_destination:
        return True
    keys = ([rule.inline] if rule.inline else []) + list(rule.lists)
    return any(rs.sources[k].elements for k in keys)


def without(rule: IRRule, **changes: object) -> IRRule:
    """The rule with some match fields changed (what a target really enforces)."""
    return replace(rule, match=replace(rule.match, **changes))  # type: ignore[arg-type]


def effective(rs: Ruleset, keep: dict[str, IRRule | None]) -> Ruleset:
    """The ruleset a target really enforces: `keep` maps rule keys to their replacement
    (None: dropped). Rules not in `keep` stay as they are."""
    def pick(rules: tuple[IRRule, ...]) -> tuple[IRRule, ...]:
        out = []
        for r in rules:
            new = keep.get(r.counter, r)
            if new is not None:
                out.append(new)
        return tuple(out)
    return replace(rs, deny=pick(rs.deny), allow=pick(rs.allow))


def utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


__all__ = [
    "ExportError",
    "check_addr",
    "check_cgroup",
    "dns_warnings",
    "effective",
    "has_destination",
    "log_prefix",
    "name_notes",
    "safe_name",
    "safe_text",
    "utc_text",
    "without",
]
