"""The suggested policy as YAML text: what `outguard suggest` prints or writes.

Written by hand, not dumped: the `# review:` remark must sit on its address's line and the
"seen, not allowed" block is comments, which a YAML dumper does not place. Every string that
is not a plain word is written in double quotes (JSON's escaping is YAML's), so no name, path
or address can change the document's shape.
"""

from __future__ import annotations

import json
import re

from outguard.journey.aggregate import Refused
from outguard.journey.suggest import SuggestedRule, Suggestion

_PLAIN = re.compile(r"[a-z][a-z0-9_.-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(value: str | int) -> str:
    """`value` as a YAML scalar that reads back as the same string (or int)."""
    if isinstance(value, int):
        return str(value)
    if _PLAIN.fullmatch(value) and value not in _YAML_WORDS:
        return value
    return json.dumps(value)


def safe_text(text: str) -> str:
    """Text for a comment line: no line breaks or other control characters."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", "?", text)


def rule_lines(rule: SuggestedRule, indent: str = "  ") -> list[str]:
    """One allow rule, as lines of a block sequence item."""
    lines = [f"{indent}- name: {scalar(rule.name)}", f"{indent}  to:"]
    for entry in rule.to:
        remark = f"  # review: {entry.review}" if entry.review else ""
        lines.append(f"{indent}    - {scalar(entry.value)}{remark}")
    if rule.ports:
        ports = [scalar(lo) if lo == hi else scalar(f"{lo}-{hi}") for lo, hi in rule.ports]
        lines.append(f"{indent}  ports: [{', '.join(ports)}]")
    if rule.proto != "any":
        lines.append(f"{indent}  proto: {rule.proto}")
    if rule.owner:
        owner = ", ".join(f"{k}: {scalar(v)}" for k, v in sorted(rule.owner.items()))
        lines.append(f"{indent}  for: {{{owner}}}")
    lines.append(f"{indent}  comment: {json.dumps(rule.comment())}")
    return lines


def refused_lines(refused: list[Refused]) -> list[str]:
    """The commented block "seen, not allowed"."""
    if not refused:
        return []
    out = ["", "# seen, not allowed (never suggested: classified medium or worse, on a feed, or",
           "# the same destination as such a flow):"]
    for r in refused:
        where = f"{', '.join(r.names)} ({r.dst})" if r.names else r.dst
        port = f"/{r.port}" if r.port is not None else ""
        last = r.evidence.last.strftime("%Y-%m-%dT%H:%MZ") if r.evidence.last else "?"
        out.append(safe_text(f"#   - {r.exes} -> {where} {r.proto}{port}: {r.why};"
                             f" {r.evidence.flows} flows, last seen {last}"))
    return out


def header(s: Suggestion) -> list[str]:
    lines = [f"# Suggested by `outguard suggest` from {s.total} learned flows: review it, then",
             "# `outguard simulate` it and apply it with `outguard apply POLICY --verify"
             " --confirm-timeout 120`."]
    if s.upstreams:
        lines.append("# Names are allowed through outguard's resolver (`dns:`): run `outguard dns"
                     " install` so that the host asks it.")
    lines += [safe_text(f"# note: {n}") for n in s.notes]
    return lines


def render(s: Suggestion) -> str:
    """The whole policy file."""
    lines = [*header(s), "version: 1", "mode: enforce"]
    if s.upstreams:
        lines += ["dns:", f"  upstreams: [{', '.join(json.dumps(u) for u in s.upstreams)}]"]
    if s.rules:
        lines.append("allow:")
        for rule in s.rules:
            lines += rule_lines(rule)
    else:
        lines.append("allow: []")
    lines += refused_lines(s.refused)
    return "\n".join(lines) + "\n"
