"""Name matching: wildcards, normalisation, IDN, blocklists, and which rule a name hits."""

from __future__ import annotations

import pytest

from outguard.policy.load import load_text
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy, normalize

POLICY = """
version: 1
dns: {upstreams: ["192.0.2.53"]}
deny:
  - name: bad
    to: [evil.example.test]
  - name: bad-https
    to: [maybe.example.test]
    ports: [443]
allow:
  - name: api
    to: [api.example.test, "*.cdn.example.test", "bücher.example.test"]
  - name: wild
    to: ["*.example.test"]
    ports: [443]
  - name: other
    to: [198.51.100.7]
"""


def policy(text: str = POLICY, blocked: dict[str, str] | None = None) -> NamePolicy:
    return NamePolicy.of(lower(load_text(text)), blocked)


@pytest.mark.parametrize(("name", "rule"), [
    ("api.example.test", "allow:api"),
    ("API.Example.TEST.", "allow:api"),
    ("a.cdn.example.test", "allow:api"),
    ("a.b.cdn.example.test", "allow:api"),
    ("cdn.example.test", "allow:wild"),  # not *.cdn, but *.example.test
    ("xn--bcher-kva.example.test", "allow:api"),
    ("bücher.example.test", "allow:api"),
    ("maybe.example.test", "allow:wild"),  # the deny has ports: it cannot refuse the name
])
def test_resolved(name: str, rule: str) -> None:
    verdict = policy().lookup(name)
    assert (verdict.action, verdict.rule) == ("resolve", rule)


@pytest.mark.parametrize(("name", "rule"), [
    ("example.test", "default"),
    ("badexample.test", "default"),
    ("api.example.test.evil", "default"),
    ("evil.example.test", "deny:bad"),
    ("EVIL.example.test.", "deny:bad"),
    ("other.invalid", "default"),
])
def test_blocked(name: str, rule: str) -> None:
    verdict = policy().lookup(name)
    assert (verdict.action, verdict.rule) == ("block", rule)


def test_wildcard_alone() -> None:
    only = policy("""
version: 1
dns: {upstreams: ["192.0.2.53"]}
allow:
  - name: w
    to: ["*.example.test"]
""")
    assert only.lookup("a.example.test").action == "resolve"
    assert only.lookup("a.b.example.test").action == "resolve"
    assert only.lookup("example.test").action == "block"
    assert only.lookup("badexample.test").action == "block"
    assert only.lookup("a.badexample.test").action == "block"


def test_sets_of_every_matching_rule() -> None:
    rs = lower(load_text(POLICY))
    by_name = {r.name: r.fqdn_set for r in rs.rules()}
    assert by_name["other"] is None
    assert all(by_name[n] and by_name[n].startswith("f_") for n in ("api", "wild", "bad"))
    verdict = NamePolicy.of(rs).lookup("x.cdn.example.test")
    assert verdict.sets == (by_name["api"], by_name["wild"])


def test_blocklist_blocks_subdomains_first() -> None:
    p = policy(blocked={"cdn.example.test": "feed.txt"})
    assert p.lookup("a.cdn.example.test").action == "blocklist"
    assert p.lookup("cdn.example.test").rule == "blocklist:feed.txt"
    assert p.lookup("api.example.test").action == "resolve"


def test_every_destination_allows_every_name() -> None:
    p = policy("""
version: 1
dns: {upstreams: ["192.0.2.53"]}
allow:
  - name: all
""")
    assert p.lookup("anything.invalid").action == "resolve"


def test_normalize() -> None:
    assert normalize("Example.TEST.") == "example.test"
    assert normalize("bücher.example") == "xn--bcher-kva.example"
    assert normalize(".") == "."


def test_unknown_resolver_user_is_a_policy_error() -> None:
    from outguard.errors import PolicyError
    with pytest.raises(PolicyError, match=r"dns.user: no user 'no-such-user-og'"):
        lower(load_text('version: 1\ndns: {upstreams: ["192.0.2.53"], user: no-such-user-og}\n'))
