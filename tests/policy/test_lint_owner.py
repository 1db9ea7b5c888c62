"""Shadowed rules with `for:` (journey trial defect 2): a rule is shadowed when an earlier
rule whose `for:` is the same or broader covers its destinations, ports and protocol."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outguard.policy.lint import lint, owner_covers
from outguard.policy.load import load_text
from outguard.policy.model import Owner

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def shadow_warnings(earlier: str, later: str, section: str = "allow") -> list[str]:
    text = f"version: 1\n{section}:\n  - {earlier}\n  - {later}\n"
    return [str(w) for w in lint(load_text(text, "p.yaml"), NOW) if "never decides" in str(w)]


@pytest.mark.parametrize(("earlier", "later"), [
    # the trial: the same rule twice, both for root
    ("{name: e, to: [203.0.113.40], ports: [123], proto: udp, for: {user: root}}",
     "{name: l, to: [203.0.113.40], ports: [123], proto: udp, for: {user: root}}"),
    # no for: is everyone's
    ("{name: e, to: [203.0.113.0/24]}", "{name: l, to: [203.0.113.4], for: {user: nobody}}"),
    # fewer conditions are broader
    ("{name: e, to: [203.0.113.4], for: {user: root}}",
     "{name: l, to: [203.0.113.4], for: {user: root, group: adm}}"),
    # a unit is its cgroup, and a cgroup takes its descendants
    ("{name: e, to: [203.0.113.4], for: {unit: app.service}}",
     "{name: l, to: [203.0.113.4], for: {cgroup: /system.slice/app.service/worker}}"),
    ("{name: e, to: [203.0.113.4], for: {cgroup: /system.slice}}",
     "{name: l, to: [203.0.113.4], for: {unit: app.service}}"),
])
def test_shadowed_with_for(earlier: str, later: str) -> None:
    for section in ("allow", "deny"):
        got = shadow_warnings(earlier, later, section)
        assert len(got) == 1 and "rule 'l' never decides anything" in got[0], got


@pytest.mark.parametrize(("earlier", "later"), [
    ("{name: e, to: [203.0.113.4], for: {user: root}}",
     "{name: l, to: [203.0.113.4], for: {user: nobody}}"),
    ("{name: e, to: [203.0.113.4], for: {user: root}}", "{name: l, to: [203.0.113.4]}"),
    ("{name: e, to: [203.0.113.4], for: {user: root, group: adm}}",
     "{name: l, to: [203.0.113.4], for: {user: root}}"),
    ("{name: e, to: [203.0.113.4], for: {unit: app.service}}",
     "{name: l, to: [203.0.113.4], for: {user: root}}"),
    ("{name: e, to: [203.0.113.4], for: {cgroup: /system.slice/app.service/worker}}",
     "{name: l, to: [203.0.113.4], for: {unit: app.service}}"),
    ("{name: e, to: [203.0.113.4], for: {cgroup: /system.slice/app}}",
     "{name: l, to: [203.0.113.4], for: {cgroup: /system.slice/app2}}"),
])
def test_not_shadowed_for_other_or_fewer_sockets(earlier: str, later: str) -> None:
    assert shadow_warnings(earlier, later) == []


def test_a_deny_for_the_same_user_makes_the_allowed_address_useless() -> None:
    text = ("version: 1\ndeny:\n  - {name: d, to: [198.51.100.0/24], for: {user: nobody}}\n"
            "allow:\n  - {name: a, to: [198.51.100.7, 203.0.113.1], for: {user: nobody}}\n"
            "  - {name: b, to: [198.51.100.7], ports: [80]}\n")
    got = [str(w) for w in lint(load_text(text, "p.yaml"), NOW)]
    assert [w for w in got if "198.51.100.7 is blocked by deny[0]" in w] == [
        next(w for w in got if "allow[0].to[0]" in w)]


def test_owner_covers_table() -> None:
    root = Owner(user="root")
    assert owner_covers(None, root) and owner_covers(root, root)
    assert not owner_covers(root, None) and not owner_covers(root, Owner(user="nobody"))
    # written differently, not compared (that needs the machine's accounts): no false warning
    assert not owner_covers(root, Owner(user=0))
