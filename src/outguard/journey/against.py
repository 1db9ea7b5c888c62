"""`suggest --against POLICY`: the user's policy, as written, plus only what it is missing.

Place in the data flow: `suggest` (run over the flows the user's policy would block, `keep`)
→ here → a unified diff (or the new file with `--out`).

The file is kept byte for byte: it is read with a round-trip YAML parser (ruamel.yaml) only to
learn where its `allow:` block ends and how it indents, and the new rules are inserted there as
text, so every comment, quote, blank line and key order stays as the user wrote it. A flow-style
`allow: [...]` cannot take block items: then ruamel.yaml writes the document back (comments and
order kept, the layout of that one sequence its own).
"""

from __future__ import annotations

import difflib
import io
import re

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from outguard.errors import OutguardError
from outguard.journey.render import refused_lines, rule_lines, safe_text
from outguard.journey.suggest import Suggestion

_EMPTY = re.compile(r"allow:\s*\[\s*\](\s*#.*)?")  # `allow: []`, a comment kept


class AgainstError(OutguardError):
    """The policy given with `--against` cannot be read as YAML."""


def _load(text: str, source: str) -> tuple[CommentedMap, int]:
    try:
        doc, _indent, offset = load_yaml_guess_indent(text)
    except YAMLError as exc:
        raise AgainstError(f"{source}: not YAML: {exc}") from None
    if not isinstance(doc, CommentedMap):
        raise AgainstError(f"{source}: not a policy (the document is no mapping)")
    return doc, offset or 0


def _block_end(lines: list[str], doc: CommentedMap, key: str) -> int:
    """The index of the line after the last line of top-level `key`'s block."""
    keys = list(doc)
    after = keys[keys.index(key) + 1:]
    end = doc.lc.key(after[0])[0] if after else len(lines)
    while end > 0 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return end


def merge(text: str, source: str, s: Suggestion) -> str:
    """The user's file with the suggested rules appended to its `allow:` and the "seen, not
    allowed" block at its end."""
    doc, offset = _load(text, source)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    added: list[str] = []
    for rule in s.rules:
        added += rule_lines(rule, indent="")
    allow = doc.get("allow")
    if not s.rules:
        pass
    elif isinstance(allow, CommentedSeq) and allow and not allow.fa.flow_style():
        end = _block_end(lines, doc, "allow")
        pad = " " * _dash_col(lines, allow)
        lines[end:end] = [f"{pad}{line}\n" for line in ["# added by outguard suggest:", *added]]
    elif "allow" not in doc:
        lines += ["allow:\n", *(f"  {line}\n" for line in added)]
    elif (empty := _EMPTY.fullmatch(lines[doc.lc.key("allow")[0]].rstrip("\n"))) is not None:
        at = doc.lc.key("allow")[0]
        lines[at:at + 1] = [f"allow:{empty.group(1) or ''}\n", *(f"  {line}\n" for line in added)]
    else:
        lines = _rewrite(doc, offset, added).splitlines(keepends=True)
    tail = [f"# note: {safe_text(n)}" for n in s.notes] + refused_lines(s.refused)
    lines += [f"{line}\n" for line in tail]
    return "".join(lines)


def _dash_col(lines: list[str], allow: CommentedSeq) -> int:
    """The column of the `-` of the sequence's first item."""
    line_no, col = (int(v) for v in allow.lc.item(0))
    text = lines[line_no]
    dash = text.rfind("-", 0, col + 1) if col < len(text) else text.find("-")
    return dash if dash >= 0 else max(col - 2, 0)


def _rewrite(doc: CommentedMap, offset: int, added: list[str]) -> str:
    """ruamel.yaml's round trip of the document, the new rules appended (a flow-style or empty
    `allow:`)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a line the user wrote on one
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    new = yaml.load("allow:\n" + "".join(f"  {line}\n" for line in added))
    allow = doc.get("allow")
    if not isinstance(allow, CommentedSeq):
        doc["allow"] = allow = CommentedSeq()
    if allow.fa.flow_style():
        allow.fa.set_block_style()
    for item in new["allow"]:
        allow.append(item)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def diff(old: str, new: str, source: str) -> str:
    """A unified diff from the user's file to the merged one."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        fromfile=source, tofile=f"{source} (suggested)"))
