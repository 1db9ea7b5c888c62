"""Warnings: policies that load but probably do not mean what they say (fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.policy.lint import as_utc, lint
from outguard.policy.load import load_text

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in lint(load_text(text, "p.yaml"), NOW)]


def test_a_clean_policy_has_no_warnings() -> None:
    assert warnings_of("version: 1\ndeny:\n  - {name: d, to: [198.51.100.0/24]}\n"
                       "allow:\n  - {name: a, to: [203.0.113.1], ports: [443], proto: tcp}\n") == []


def test_allow_shadowed_by_an_earlier_deny() -> None:
    text = """\
version: 1
deny:
  - name: bad-net
    to: [198.51.100.0/24]
allow:
  - name: inside-bad
    to: [198.51.100.7, 198.51.100.128/25]
    ports: [443]
    proto: tcp
"""
    assert warnings_of(text) == [
        "p.yaml:6:5: allow[0]: rule 'inside-bad' never decides anything: deny[0] 'bad-net'"
        " blocks all of it first"]


def test_allow_shadowed_by_an_earlier_deny_for_every_destination() -> None:
    text = ("version: 1\ndeny:\n  - {name: smtp, ports: [25, 587], proto: tcp}\n"
            "allow:\n  - {name: mail, to: [203.0.113.25], ports: [25], proto: tcp}\n")
    assert warnings_of(text) == [
        "p.yaml:5:5: allow[0]: rule 'mail' never decides anything: deny[0] 'smtp'"
        " blocks all of it first"]


def test_allow_shadowed_by_an_earlier_allow() -> None:
    text = """\
version: 1
allow:
  - name: web
    to: [203.0.113.0/24, "2001:db8:1::/48"]
    ports: ["443-8443"]
  - name: web-host
    to: [203.0.113.10, "2001:db8:1::10"]
    ports: [443, 8000-8080]
    proto: tcp
"""
    assert warnings_of(text) == [
        "p.yaml:6:5: allow[1]: rule 'web-host' never decides anything: allow[0] 'web'"
        " already allows all of it first"]


def test_deny_shadowed_by_an_earlier_deny() -> None:
    text = ("version: 1\nmode: audit\ndeny:\n  - {name: all-bad, to: [198.51.100.0/24]}\n"
            "  - {name: one-bad, to: [198.51.100.9], ports: [80], proto: udp}\n")
    assert warnings_of(text) == [
        "p.yaml:5:5: deny[1]: rule 'one-bad' never decides anything: deny[0] 'all-bad'"
        " blocks all of it first"]


@pytest.mark.parametrize(("earlier", "later"), [
    # the later rule reaches something the earlier does not
    ("{name: e, to: [203.0.113.0/25]}", "{name: l, to: [203.0.113.0/24]}"),
    ("{name: e, to: [203.0.113.1]}", "{name: l, to: [203.0.113.1, 203.0.113.2]}"),
    ("{name: e, to: [203.0.113.0/24]}", "{name: l, to: ['2001:db8::1']}"),
    ("{name: e, to: [203.0.113.1], ports: [443]}", "{name: l, to: [203.0.113.1]}"),
    ("{name: e, to: [203.0.113.1], ports: [443]}", "{name: l, to: [203.0.113.1], ports: [444]}"),
    ("{name: e, to: [203.0.113.1], proto: tcp}", "{name: l, to: [203.0.113.1]}"),
    ("{name: e, to: [203.0.113.1], proto: tcp}", "{name: l, to: [203.0.113.1], proto: udp}"),
    # an earlier rule for some users, or with an expiry, may not apply
    ("{name: e, for: {user: 0}}", "{name: l, to: [203.0.113.1]}"),
    ("{name: e, expires: 2099-01-01T00:00:00Z}", "{name: l, to: [203.0.113.1]}"),
    # names, wildcards and lists are not compared
    ("{name: e, to: [example.test]}", "{name: l, to: [example.test]}"),
    ("{name: e, to: ['@x']}", "{name: l, to: [203.0.113.1]}"),
])
def test_not_shadowed(earlier: str, later: str) -> None:
    text = (f"version: 1\nallow:\n  - {earlier}\n  - {later}\n"
            "lists:\n  x: [203.0.113.0/24]\n")
    assert not [w for w in warnings_of(text) if "never decides" in w]


def test_allow_of_everything_ipv4_and_ipv6() -> None:
    text = ('version: 1\nallow:\n  - name: v4\n    to: [0.0.0.0/0]\n    ports: [80]\n'
            '  - name: v6\n    to: ["::/0"]\n    ports: [80]\n')
    assert warnings_of(text) == [
        "p.yaml:4:10: allow[0].to[0]: allows every IPv4 destination",
        "p.yaml:7:10: allow[1].to[0]: allows every IPv6 destination"]


def test_deny_of_everything_is_no_warning() -> None:
    assert warnings_of("version: 1\nmode: audit\ndeny:\n  - {name: d, to: [0.0.0.0/0, '::/0']}\n"
                       ) == []


def test_allow_without_destination_port_or_owner() -> None:
    assert warnings_of("version: 1\nallow:\n  - name: everything\n") == [
        "p.yaml:3:5: allow[0]: rule 'everything' allows every destination on every port"]
    assert warnings_of("version: 1\nallow:\n  - {name: a, ports: [443]}\n") == []
    assert warnings_of("version: 1\nallow:\n  - {name: a, for: {user: 0}}\n") == []


def test_unused_lists() -> None:
    text = ("version: 1\nallow:\n  - {name: a, to: ['@used'], ports: [80]}\n"
            "lists:\n  used: [192.0.2.1]\n  unused: [192.0.2.9]\n")
    assert warnings_of(text) == ["p.yaml:6:11: lists.unused: list 'unused' is not used by any rule"]


def test_a_list_used_by_a_deny_rule_is_used() -> None:
    text = "version: 1\nmode: audit\ndeny:\n  - {name: d, to: ['@l']}\nlists:\n  l: [192.0.2.1]\n"
    assert warnings_of(text) == []


def test_expired_rules_at_a_fixed_time() -> None:
    text = """\
version: 1
allow:
  - name: old
    to: [203.0.113.1]
    expires: 2026-05-01T00:00:00Z
  - name: just-now
    to: [203.0.113.2]
    expires: 2026-06-01T12:00:00Z
  - name: future
    to: [203.0.113.3]
    expires: 2026-06-01T12:00:01Z
"""
    assert warnings_of(text) == [
        "p.yaml:5:14: allow[0].expires: rule 'old' expired on 2026-05-01T00:00:00+00:00;"
        " it is left out of the ruleset",
        "p.yaml:8:14: allow[1].expires: rule 'just-now' expired on 2026-06-01T12:00:00+00:00;"
        " it is left out of the ruleset"]


def test_expired_with_an_offset() -> None:
    text = ("version: 1\nmode: audit\ndeny:\n  - {name: d, to: [198.51.100.1],"
            " expires: '2026-06-01T13:30:00+02:00'}\n")
    (line,) = warnings_of(text)
    assert line == ("p.yaml:4:44: deny[0].expires: rule 'd' expired on 2026-06-01T13:30:00+02:00;"
                    " it is left out of the ruleset")


def test_host_names_and_wildcards() -> None:
    text = ('version: 1\nallow:\n  - name: h\n    to: [mirror.example.test, "*.cdn.example.test"]\n'
            "    ports: [443]\n")
    assert warnings_of(text) == [
        "p.yaml:4:10: allow[0].to[0]: host name 'mirror.example.test' is resolved when the policy"
        " is applied; its addresses go stale until the next apply",
        "p.yaml:4:31: allow[0].to[1]: wildcard '*.cdn.example.test' needs outguard's DNS resolver;"
        " until then it matches nothing in the kernel"]


def test_load_text_lints_with_the_real_clock() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [1],"
                       " expires: 2001-01-01T00:00:00Z}\n")
    # ... and, its only allow rule expired, nothing is allowed any more
    assert [w.path for w in policy.warnings] == ["allow", "allow[0].expires"]


def test_as_utc() -> None:
    aware = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
    assert as_utc(aware) == aware
    assert as_utc(datetime(2026, 6, 1, 14, 0)).tzinfo == UTC  # naive: local time


# --- issue 14: more that loads but is probably not meant ---------------------------------------

def test_enforce_with_nothing_allowed() -> None:
    assert warnings_of("version: 1\nmode: enforce\ndeny:\n  - {name: d, to: [198.51.100.0/24]}\n") \
        == ["p.yaml:2:7: mode: mode enforce with no allow rule in force: every new outbound"
            " connection is blocked (loopback and established connections excepted)"]
    assert warnings_of("version: 1\n")[0].startswith("p.yaml:1:1: mode enforce with no allow")
    assert warnings_of("version: 1\nmode: audit\n") == []


def test_unused_feeds_and_empty_lists(tmp_path: object) -> None:
    text = ("version: 1\nallow:\n  - {name: a, to: ['@empty', 203.0.113.1], ports: [443]}\n"
            "lists:\n  empty: []\nfeeds:\n  corp: {url: 'https://intel.example.test/bad.txt'}\n")
    assert warnings_of(text) == [
        "p.yaml:5:10: lists.empty: list 'empty' is empty: rules that use it match nothing through"
        " it",
        "p.yaml:7:9: feeds.corp: feed 'corp' is not used by any rule (name it in a deny rule:"
        " '@feed:corp')"]


def test_an_allowed_address_that_a_deny_blocks() -> None:
    text = ("version: 1\ndeny:\n  - {name: bad, to: [198.51.100.0/24]}\nallow:\n"
            "  - {name: a, to: [203.0.113.1, 198.51.100.7], ports: [443]}\n")
    assert warnings_of(text) == [
        "p.yaml:5:33: allow[0].to[1]: 198.51.100.7 is blocked by deny[0] 'bad' (deny beats"
        " allow): allowing it does nothing"]


def test_a_deny_on_some_ports_does_not_block_an_allow() -> None:
    text = ("version: 1\ndeny:\n  - {name: bad, to: [198.51.100.0/24], ports: [25]}\nallow:\n"
            "  - {name: a, to: [203.0.113.1, 198.51.100.7], ports: [443]}\n")
    assert warnings_of(text) == []


@pytest.mark.parametrize(("rate", "expected"), [
    ("1000/second", None),
    ("2000/second", "2000/second is no limit in practice: a flood of blocked packets floods"
                    " the log and the monitor"),
    ("1/minute", None),
    ("1/hour", "1/hour: after a few log lines, blocked packets go unlogged for a long time"
               " (the monitor sees none of them)"),
])
def test_log_rate_extremes(rate: str, expected: str | None) -> None:
    got = warnings_of(f"version: 1\nmode: audit\noptions: {{log_rate: {rate}}}\n")
    assert got == ([] if expected is None else [f"p.yaml:3:21: options.log_rate: {expected}"])


def test_duplicate_destinations_in_a_rule() -> None:
    text = ("version: 1\nallow:\n  - {name: a, ports: [443], to: [203.0.113.1, 203.0.113.0/24,"
            " '203.0.113.1', example.test, example.test.]}\n")
    got = [str(w) for w in load_text(text, "p.yaml").warnings]  # found by load, as written
    assert [w for w in got if "host name" not in w] == [
        "p.yaml:3:34: allow[0].to[0]: 203.0.113.1 is inside 203.0.113.0/24 (to[1]) of this rule",
        "p.yaml:3:63: allow[0].to[2]: 203.0.113.1 is already to[0] of this rule",
        "p.yaml:3:92: allow[0].to[4]: example.test is already to[3] of this rule"]


def test_a_list_file_of_names_without_dns(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("mirror.example.test\n")
    policy = load_text("version: 1\nallow:\n  - {name: a, to: ['@n'], ports: [443]}\nlists:\n"
                       "  n: {file: names.txt}\n", "p.yaml", base_dir=tmp_path)
    assert [str(w) for w in lint(policy, NOW)] == [
        "p.yaml:5:13: lists.n.file: list file of 'n' holds host names: without a 'dns:' section"
        " they match nothing (names in list files are for outguard's resolver)"]
