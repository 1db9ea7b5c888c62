"""policy.loaded: places in a document, and a loaded policy's rules in evaluation order."""

from __future__ import annotations

from outguard.policy.load import load_text
from outguard.policy.loaded import format_path


def test_format_path() -> None:
    assert format_path(("allow", 3, "to", 1)) == "allow[3].to[1]"
    assert format_path(("lists", "web")) == "lists.web" and format_path(()) == ""


def test_rules_deny_first() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a}\ndeny:\n  - {name: d, to: [192.0.2.1]}\n")
    assert [(s, i, r.name) for s, i, r in policy.rules()] == [("deny", 0, "d"), ("allow", 0, "a")]
    assert policy.lists == {} and len(policy.digest) == 64
