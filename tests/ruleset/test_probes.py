"""`ruleset.probes`: which probes verify sends for a ruleset, and how it judges their results."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.policy.load import load_text
from outguard.ruleset.lower import lower
from outguard.ruleset.probes import (
    BLOCKED,
    ELSEWHERE,
    LET_OUT,
    NO_ROUTE,
    REACHED,
    SENT,
    choose,
    judge,
    under_lockdown,
)

POLICY = """version: 1
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10", 203.0.113.128/25]
    ports: ["8443-8450", 443]
  - name: ntp
    to: [pool.example.test]
    ports: [123]
    proto: udp
  - name: backup
    to: [203.0.113.30]
    for: {user: nobody}
  - name: ping
    to: [203.0.113.40]
    proto: icmp
  - name: all
    for: {user: root}
deny:
  - name: bad
    to: [198.51.100.64/30]
"""


def _resolve(name: str) -> list[str]:
    return {"pool.example.test": ["203.0.113.20"]}.get(name, [])


def _chosen():  # type: ignore[no-untyped-def]
    return choose(lower(load_text(POLICY), resolver=_resolve), _resolve)


def test_a_probe_per_rule_and_ip_version_and_one_for_the_default() -> None:
    probes, skipped = _chosen()
    got = [(p.subject, p.dst, p.port, p.proto, p.uid, p.expect.rule) for p in probes]
    assert got == [
        ("deny:bad", "198.51.100.65", 443, "tcp", 0, "deny:bad"),
        ("allow:web", "203.0.113.10", 8443, "tcp", 0, "allow:web"),
        ("allow:web", "2001:db8:10::10", 8443, "tcp", 0, "allow:web"),
        ("allow:ntp", "203.0.113.20", 123, "udp", 0, "allow:ntp"),
        ("allow:backup", "203.0.113.30", 443, "tcp", 65534, "allow:backup"),
        ("default", "192.0.2.201", 9, "tcp", 65534, "default")]
    assert [s.subject for s in skipped] == ["allow:ping", "allow:all"]
    assert [p.blocked for p in probes] == [True, False, False, False, False, True]


@pytest.mark.parametrize(("index", "raw", "moved", "guard", "outcome", "ok"), [
    (1, "connected", {"allow.web": 1}, False, REACHED, True),
    (1, "refused", {}, False, REACHED, True),
    (3, "sent", {"allow.ntp": 1}, False, SENT, True),
    (1, "timeout", {"allow.web": 1}, False, ELSEWHERE, False),
    (3, "eperm", {}, False, ELSEWHERE, False),
    (1, "timeout", {"default": 1, "log.default": 1}, False, BLOCKED, False),
    (0, "timeout", {"deny.bad": 1, "log.deny.bad": 1}, False, BLOCKED, True),
    (0, "timeout", {}, True, LET_OUT, False),
    (0, "timeout", {}, False, ELSEWHERE, False),
    (5, "eperm", {"lockdown": 1}, False, BLOCKED, True),
    (1, "noroute", {}, False, NO_ROUTE, False),  # an allowed destination: unreachable
    # one that must be blocked, with no route (a namespace with no default route): nothing
    # left the host, so no mismatch (a newcomer's `apply --verify` was rolled back for it)
    (5, "noroute", {}, False, NO_ROUTE, True),
    (0, "noroute", {}, False, NO_ROUTE, True),
])
def test_judge(index: int, raw: str, moved: dict[str, int], guard: bool, outcome: str,
               ok: bool) -> None:
    spec = _chosen()[0][index]
    got = judge(spec, raw, moved, guard)
    assert (got.outcome, got.ok) == (outcome, ok), got.detail


def test_under_a_lockdown_only_kept_rules_are_expected_to_get_out() -> None:
    probes = under_lockdown(_chosen()[0], ["ntp"])
    assert [p.expect.rule for p in probes] == [
        "deny:bad", "lockdown", "lockdown", "allow:ntp", "lockdown", "default"]
    web = probes[1]
    assert judge(web, "timeout", {"lockdown": 1}, False).ok
    assert not judge(web, "connected", {"allow.web": 1}, False).ok


def test_a_feed_rule_is_probed_at_its_first_entry(tmp_path: Path) -> None:
    from outguard.pipeline import load_policy

    (tmp_path / "bad.txt").write_text("# bad hosts\n198.51.100.70\n198.51.100.80/29\n2001:db8:bad::/48\n")
    text = ("version: 1\ndeny:\n  - {name: threats, to: ['@feed:local-bad'], ports: [443]}\n"
            "feeds:\n  local-bad: {file: bad.txt}\n")
    (tmp_path / "p.yaml").write_text(text)
    policy = load_policy(tmp_path / "p.yaml", feed_dir=tmp_path / "feeds", keep_feed_copies=True)
    rs = lower(policy, resolver=_resolve)
    assert any(s.bulk is not None for s in rs.sources.values())
    probes, _skipped = choose(rs, _resolve)
    got = [(p.subject, p.dst, p.expect.rule) for p in probes if p.subject != "default"]
    assert got == [("deny:threats", "198.51.100.70", "deny:threats"),
                   ("deny:threats", "2001:db8:bad::", "deny:threats")]


def test_with_dns_a_name_rule_is_expected_to_let_out_the_address_of_its_name() -> None:
    text = POLICY.replace("version: 1\n", "version: 1\ndns: {upstreams: [192.0.2.53]}\n")
    rs = lower(load_text(text), resolver=_resolve)
    probes, _skipped = choose(rs, _resolve)
    (ntp,) = [p for p in probes if p.subject == "allow:ntp"]
    assert (ntp.dst, ntp.expect.rule, ntp.blocked) == ("203.0.113.20", "allow:ntp", False)


def test_a_wildcard_rule_is_not_probed_and_says_so() -> None:
    """A suggested `*.domain` rule has no host name to probe: the reason says that, not "a
    name that does not resolve" (the journey's first verify sent one looking at DNS)."""
    text = ("version: 1\ndns:\n  upstreams: [192.0.2.53]\nallow:\n  - name: mirrors\n"
            "    to: ['*.example.test']\n    ports: [80]\n  - name: gone\n"
            "    to: [gone.example.test]\n    ports: [80]\n")
    _probes, skipped = choose(lower(load_text(text), resolver=_resolve), _resolve)
    why = {s.subject: s.why for s in skipped}
    assert why["allow:mirrors"] == "only wildcards (*.example.test): verify has no host name" \
        " to probe"
    assert "does not resolve" in why["allow:gone"]
