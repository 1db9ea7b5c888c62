"""`suggest --against`: the user's file kept as written, only the missing rules added."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.errors import OutguardError
from outguard.journey.against import diff, merge
from outguard.journey.simulate import LearnedNames, Replayer
from outguard.journey.suggest import suggest
from outguard.pipeline import load_policy, lower_policy

from .flows import flow
from .helpers import replay

USER = """\
# my policy: do not lose this comment
version: 1
mode: enforce   # enforce!
allow:
  # the API, by hand
  - name: api
    to: [203.0.113.10]
    ports: [443]

# deny section below
deny:
  - {name: bad, to: [198.51.100.0/24]}
"""
FLOWS = [flow("203.0.113.10"), flow("203.0.113.20", 80), flow("198.51.100.7", 1389,
         exe="/usr/bin/java", signature="jndi-callback", severity="critical")]


def _merged(tmp: Path, text: str, flows: list) -> tuple[str, Path]:  # type: ignore[type-arg]
    path = tmp / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    names = LearnedNames(flows)
    replayer = Replayer(lower_policy(policy, resolver=names.resolver), names=names)
    s = suggest(flows, keep=lambda f: replayer.replay(f).blocked,
                taken=[r.name for r in (*policy.doc.allow, *policy.doc.deny)])
    out = merge(text, str(path), s)
    (tmp / "merged.yaml").write_text(out)
    return out, tmp / "merged.yaml"


def test_keeps_the_file_and_adds_only_what_is_missing(tmp_path: Path) -> None:
    out, merged = _merged(tmp_path, USER, FLOWS)
    rest = iter(out.splitlines())
    assert all(line in rest for line in USER.splitlines())  # every line, in order
    assert len(out.splitlines()) > len(USER.splitlines())
    policy = load_policy(merged)
    assert [r.name for r in policy.doc.allow] == ["api", "curl"]
    assert [str(t) for t in policy.doc.allow[1].to or []] == ["203.0.113.20"]
    # the new rule sits in the allow block, before the deny section's comment
    assert out.index("- name: curl") < out.index("# deny section below")
    assert "jndi-callback (critical)" in out.split("deny:")[-1]
    assert replay(policy, FLOWS).regressions == 0


def test_nothing_missing_changes_nothing(tmp_path: Path) -> None:
    out, _m = _merged(tmp_path, USER, [flow("203.0.113.10")])
    assert out == USER
    assert diff(USER, out, "p.yaml") == ""


def test_the_diff_shows_only_additions(tmp_path: Path) -> None:
    out, _m = _merged(tmp_path, USER, FLOWS)
    text = diff(USER, out, "policy.yaml")
    assert text.startswith("--- policy.yaml\n+++ policy.yaml (suggested)\n")
    changed = [line for line in text.splitlines()[2:] if line[:1] in "+-"
               and not line.startswith("@@")]
    assert changed and all(line.startswith("+") for line in changed)


def test_a_flow_style_allow_and_no_allow_at_all(tmp_path: Path) -> None:
    flow_style = "version: 1  # keep\nallow: [{name: api, to: [203.0.113.10]}]\n"
    out, merged = _merged(tmp_path, flow_style, FLOWS[:2])
    assert "# keep" in out
    assert [r.name for r in load_policy(merged).doc.allow] == ["api", "curl"]
    bare = "version: 1\n# nothing allowed yet\n"
    out, merged = _merged(tmp_path, bare, FLOWS[:2])
    assert out.startswith(bare)
    assert [r.name for r in load_policy(merged).doc.allow] == ["curl-tcp80", "curl-tcp443"]


def test_rule_names_do_not_collide(tmp_path: Path) -> None:
    text = USER.replace("name: api", "name: curl")
    _out, merged = _merged(tmp_path, text, FLOWS)
    assert [r.name for r in load_policy(merged).doc.allow] == ["curl", "curl-2"]


def test_not_yaml_is_an_error() -> None:
    from outguard.journey.suggest import Suggestion

    with pytest.raises(OutguardError, match="not YAML"):
        merge("a: [\n", "p.yaml", Suggestion([], [], []))
    with pytest.raises(OutguardError, match="no mapping"):
        merge("- 1\n", "p.yaml", Suggestion([], [], []))


def test_an_empty_allow_list_is_filled_in_place(tmp_path: Path) -> None:
    text = "# mine\nversion: 1\nallow: []   # nothing yet\ndeny: []\n"
    out, merged = _merged(tmp_path, text, FLOWS[:2])
    assert out.startswith("# mine\nversion: 1\nallow:   # nothing yet\n  - name: curl")
    assert "deny: []\n" in out
    assert [r.name for r in load_policy(merged).doc.allow] == ["curl-tcp80", "curl-tcp443"]
