"""Error messages: exact `FILE:LINE:COL: path: message` lines for bad policies, all at once."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from outguard.errors import PolicyError, Problem
from outguard.feeds.policy import FEEDS
from outguard.policy import load

# a policy's `@feed:` lists load as the pipeline loads them
load_policy = partial(load.load_policy, feeds=FEEDS)
load_text = partial(load.load_text, feeds=FEEDS)


def problems_of(text: str, source: str = "policy.yaml", base_dir: Path | None = None) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_text(text, source, base_dir=base_dir or Path("/nonexistent-outguard-test-dir"))
    problems = err.value.problems
    assert str(err.value) == "\n".join(str(p) for p in problems)
    for p in problems:
        assert p.line >= 1 and p.col >= 1 and p.message
    return [str(p) for p in problems]


# The issue's example: the entry `10.0.0.300` is line 12, column 9.
ISSUE_EXAMPLE = """\
version: 1
mode: enforce
allow:
  - name: web-api
    to: [203.0.113.10]
    ports: [443]
  - name: backup
    to: [203.0.113.12]
    ports: [80]
  - name: intranet
    to:
      - 10.0.0.300
"""


def test_the_issue_example_error() -> None:
    assert problems_of(ISSUE_EXAMPLE) == [
        "policy.yaml:12:9: allow[2].to[0]: '10.0.0.300' is not an IP address, network or host name"]


def test_the_issue_example_error_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(ISSUE_EXAMPLE)
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "policy.yaml")
    (problem,) = err.value.problems
    assert problem == Problem(str(tmp_path / "policy.yaml"), 12, 9, "allow[2].to[0]",
                              "'10.0.0.300' is not an IP address, network or host name")


RULE = "version: 1\nallow:\n  - name: a\n"

TABLE: list[tuple[str, str, list[str]]] = [
    # --- unknown keys: at the key
    ("unknown top-level key", "version: 1\nallowed: []\n",
     ["policy.yaml:2:1: allowed: unknown key 'allowed'; did you mean 'allow'?"]),
    ("unknown rule key", RULE + "    too: [192.0.2.1]\n",
     ["policy.yaml:4:5: allow[0].too: unknown key 'too'; did you mean 'to'?"]),
    ("unknown key in for", RULE + "    for: {usr: nobody}\n",
     ["policy.yaml:4:11: allow[0].for.usr: unknown key 'usr'; did you mean 'user'?"]),
    ("unknown option", "version: 1\noptions:\n  log_rat: 1/second\n",
     ["policy.yaml:3:3: options.log_rat: unknown key 'log_rat'; did you mean 'log_rate'?"]),
    # --- duplicate keys: at the second one
    ("duplicate top-level key", "version: 1\nmode: audit\nmode: enforce\n",
     ["policy.yaml:3:1: mode: duplicate key 'mode'"]),
    ("duplicate rule key", RULE + "    ports: [1]\n    ports: [2]\n",
     ["policy.yaml:5:5: allow[0].ports: duplicate key 'ports'"]),
    # --- ports and ranges
    ("port too big", RULE + "    ports: [80, 70000]\n",
     ["policy.yaml:4:17: allow[0].ports[1]: port 70000 is outside 1-65535"]),
    ("port zero", RULE + "    ports: [0]\n",
     ["policy.yaml:4:13: allow[0].ports[0]: port 0 is outside 1-65535"]),
    ("reversed range", RULE + '    ports: ["90-80"]\n',
     ["policy.yaml:4:13: allow[0].ports[0]: port range 90-80 is reversed"]),
    ("range end too big", RULE + '    ports: ["1-70000"]\n',
     ["policy.yaml:4:13: allow[0].ports[0]: port 70000 is outside 1-65535"]),
    ("port name", RULE + "    ports: [http]\n",
     ["policy.yaml:4:13: allow[0].ports[0]: 'http' is not a port or port range"
      " (e.g. 443 or 8000-8100)"]),
    ("ports not a list", RULE + "    ports: 443\n",
     ["policy.yaml:4:12: allow[0].ports: 443: expected a list, e.g. [a, b]"]),
    ("empty ports", RULE + "    ports: []\n",
     ["policy.yaml:4:12: allow[0].ports: 'ports' is empty: leave it out to mean every port"]),
    ("icmp with ports", RULE + "    proto: icmp\n    ports: [1]\n",
     ["policy.yaml:5:12: allow[0].ports: ports need proto tcp, udp or any, not icmp"]),
    # --- proto, mode, options
    ("bad proto", RULE + "    proto: sctp\n",
     ["policy.yaml:4:12: allow[0].proto: 'sctp' is not one of 'tcp', 'udp', 'icmp' or 'any'"]),
    ("bad mode", "version: 1\nmode: learn\n",
     ["policy.yaml:2:7: mode: 'learn' is not one of 'enforce' or 'audit'"]),
    ("bad version", "version: 2\n", ["policy.yaml:1:10: version: 2: must be 1"]),
    ("missing version", "mode: audit\n", ["policy.yaml:1:1: missing required key 'version'"]),
    ("bad default action", "version: 1\noptions: {default_action: allow}\n",
     ["policy.yaml:2:27: options.default_action: 'allow' is not one of 'drop' or 'reject'"]),
    ("bad log rate", "version: 1\noptions: {log_rate: fast}\n",
     ["policy.yaml:2:21: options.log_rate: 'fast' is not a rate such as '10/second'"
      " (second, minute, hour, day)"]),
    # --- destinations
    ("not an address", RULE + "    to: [10.0.0.300]\n",
     ["policy.yaml:4:10: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host name"]),
    ("a number as destination", RULE + "    to: [12]\n",
     ["policy.yaml:4:10: allow[0].to[0]: 12 is not an IP address, network or host name"]),
    ("host bits set", "version: 1\ndeny:\n  - name: a\n    to: [10.0.0.1/8]\n",
     ["policy.yaml:4:10: deny[0].to[0]: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"]),
    ("host bits set, IPv6", 'version: 1\ndeny:\n  - name: a\n    to: ["2001:db8::1/32"]\n',
     ["policy.yaml:4:10: deny[0].to[0]: '2001:db8::1/32' has host bits set;"
      " did you mean 2001:db8::/32?"]),
    ("prefix too long", "version: 1\ndeny:\n  - name: a\n    to: [10.0.0.0/33]\n",
     ["policy.yaml:4:10: deny[0].to[0]: '10.0.0.0/33': prefix length /33 is longer than /32"]),
    ("bad wildcard", RULE + '    to: ["*.com"]\n',
     ["policy.yaml:4:10: allow[0].to[0]: '*.com' is not a valid wildcard name (*.domain.tld)"]),
    ("bad list reference", RULE + '    to: ["@"]\n',
     ["policy.yaml:4:10: allow[0].to[0]: '@' is not a valid list reference (@name)"]),
    ("unknown list", RULE + '    to: ["@nope"]\n',
     ["policy.yaml:4:10: allow[0].to[0]: no list named 'nope' in 'lists'"]),
    ("empty to", RULE + "    to: []\n",
     ["policy.yaml:4:9: allow[0].to: 'to' is empty: leave it out to mean every destination"]),
    # --- rules
    ("missing name", "version: 1\nallow:\n  - to: [192.0.2.1]\n",
     ["policy.yaml:3:5: allow[0]: missing required key 'name'"]),
    ("bad rule name", 'version: 1\nallow:\n  - name: "web api"\n',
     ["policy.yaml:3:11: allow[0].name: 'web api' is not a valid rule name: letters, digits,"
      " '_', '.', '-', at most 48, starting with a letter or digit"]),
    ("duplicate rule names across sections",
     "version: 1\ndeny:\n  - name: a\n    to: [192.0.2.1]\nallow:\n  - name: a\n"
     "    to: [192.0.2.3]\n",
     ["policy.yaml:6:11: allow[0].name: rule name 'a' is already used by deny[0]"]),
    ("duplicate rule names in a section",
     "version: 1\nallow:\n  - name: a\n  - name: b\n  - name: a\n",
     ["policy.yaml:5:11: allow[2].name: rule name 'a' is already used by allow[0]"]),
    ("rules not a list", "version: 1\nallow: {name: a}\n",
     ["policy.yaml:2:8: allow: a mapping: expected a list, e.g. [a, b]"]),
    # --- for
    ("missing user", RULE + "    for: {user: no-such-user-xyz}\n",
     ["policy.yaml:4:17: allow[0].for.user: no user 'no-such-user-xyz' on this machine"]),
    ("missing group", RULE + "    for: {group: no-such-group-xyz}\n",
     ["policy.yaml:4:18: allow[0].for.group: no group 'no-such-group-xyz' on this machine"]),
    ("empty for", RULE + "    for: {}\n",
     ["policy.yaml:4:10: allow[0].for: 'for' needs at least one of user, group, unit, cgroup"]),
    ("unit and cgroup", RULE + "    for: {unit: a.service, cgroup: /a}\n",
     ["policy.yaml:4:10: allow[0].for: give either 'unit' or 'cgroup', not both"]),
    ("bad unit", RULE + '    for: {unit: "a b"}\n',
     ["policy.yaml:4:17: allow[0].for.unit: 'a b' is not a systemd unit name"]),
    ("cgroup escaping upwards", RULE + "    for: {cgroup: /a/../b}\n",
     ["policy.yaml:4:19: allow[0].for.cgroup: '/a/../b' is not a cgroup path"]),
    # --- expires, comment
    ("bad expires", RULE + "    expires: tomorrow\n",
     ["policy.yaml:4:14: allow[0].expires: 'tomorrow': expected a date and time such as"
      " 2026-12-31T00:00:00Z, or a date such as 2026-12-31"]),
    ("comment with a quote", RULE + "    comment: 'say \"hi\"'\n",
     ["policy.yaml:4:14: allow[0].comment: a comment cannot hold '\"': control, format and"
      " line-break characters and '\"' are refused"]),
    # --- lists
    ("list with items and file", "version: 1\nlists:\n  l: {file: a.txt, items: [192.0.2.1]}\n",
     ["policy.yaml:3:6: lists.l: a list is either a sequence of entries or {file: PATH}"]),
    ("list with neither", "version: 1\nlists:\n  l: {}\n",
     ["policy.yaml:3:6: lists.l: a list is either a sequence of entries or {file: PATH}"]),
    ("list in a list", 'version: 1\nlists:\n  l: ["@m"]\n  m: [192.0.2.1]\n',
     ["policy.yaml:3:7: lists.l[0]: a list cannot refer to another list"]),
    # --- not a policy at all
    ("not a mapping", "- a\n- b\n",
     ["policy.yaml:1:1: a policy is a mapping with at least 'version: 1'"]),
    ("empty file", "", ["policy.yaml:1:1: a policy is a mapping with at least 'version: 1'"]),
    ("YAML syntax", "version: 1\nallow: [\n",
     ["policy.yaml:3:1: not valid YAML: a value is missing here (an unclosed '[' or '{', or a stray ',')"]),
    ("tab indentation", "version: 1\n\tallow: []\n",
     ["policy.yaml:2:1: not valid YAML: a tab character in the indentation: YAML indents with"
      " spaces only"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _n, t, e in TABLE],
                         ids=[n for n, _t, _e in TABLE])
def test_error_lines(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_errors_with_a_changing_part_are_located() -> None:
    """Messages that come from pydantic verbatim: only where and what, not the wording."""
    for text, where in [
        ("version: 1\noptions: {nflog_group: 70000}\n", "policy.yaml:2:24: options.nflog_group: "),
        (RULE + f"    comment: {'x' * 201}\n", "policy.yaml:4:14: allow[0].comment: "),
    ]:
        (line,) = problems_of(text)
        assert line.startswith(where)


# --- list files: reported with the LIST FILE's path, line and column ---------------------------

FEED = """\
203.0.113.1
  10.0.0.300

# a comment
bad..host
203.0.113.0/24   # fine
\t10.0.0.1/8
"""


def test_list_file_lines_are_reported_in_the_list_file(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text(FEED)
    text = "version: 1\ndeny:\n  - {name: f, to: ['@feed']}\nlists:\n  feed: {file: feed.txt}\n"
    feed = tmp_path / "feed.txt"
    assert problems_of(text, base_dir=tmp_path) == [
        f"{feed}:2:3: lists.feed: not an IP address, network or host name",
        f"{feed}:5:1: lists.feed: not an IP address, network or host name",
        f"{feed}:7:2: lists.feed: host bits set; did you mean 10.0.0.0/8?",
    ]


def test_list_file_next_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("198.51.100.7\nnot/a/prefix\n")
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ndeny:\n  - {name: f, to: ['@feed']}\nlists:\n  feed: {file: feed.txt}\n")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "policy.yaml")
    assert [str(p) for p in err.value.problems] == [
        f"{tmp_path / 'feed.txt'}:2:1: lists.feed: not an IP address, network or host name"]


def test_list_file_reference_to_a_list_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("@other\n")
    text = "version: 1\nlists:\n  feed: {file: feed.txt}\n"
    assert problems_of(text, base_dir=tmp_path) == [
        f"{tmp_path / 'feed.txt'}:1:1: lists.feed: a list file cannot refer to another list"]


def test_list_file_reference_column(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("  @other\n")
    text = "version: 1\nlists:\n  feed: {file: feed.txt}\n"
    assert problems_of(text, base_dir=tmp_path) == [
        f"{tmp_path / 'feed.txt'}:1:3: lists.feed: a list file cannot refer to another list"]


def test_many_bad_list_lines_are_summarised(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("192.0.2.1\n" + "".join(f"bad{i}..x\n" for i in range(25)))
    lines = problems_of("version: 1\nlists:\n  big: {file: big.txt}\n", base_dir=tmp_path)
    assert len(lines) == 21
    assert lines[0] == f"{tmp_path / 'big.txt'}:2:1: lists.big: not an IP address," \
        " network or host name"
    assert lines[-1] == f"{tmp_path / 'big.txt'}:1:1: lists.big: 5 more bad lines not shown"


def test_missing_list_file(tmp_path: Path) -> None:
    (line,) = problems_of("version: 1\nlists:\n  l: {file: nope.txt}\n", base_dir=tmp_path)
    assert line.endswith(f"lists.l.file: cannot read list file {str(tmp_path / 'nope.txt')!r}:"
                         " No such file or directory")


def test_missing_list_file_is_reported_in_the_policy(tmp_path: Path) -> None:
    (line,) = problems_of("version: 1\nlists:\n  l: {file: nope.txt}\n", base_dir=tmp_path)
    assert line.startswith("policy.yaml:3:13: lists.l.file: cannot read list file")


# --- every error at once ----------------------------------------------------------------------

def test_all_shape_errors_at_once_in_file_order() -> None:
    text = """\
version: 1
mode: audit
mode: enforce
allow:
  - name: a
    to: [10.0.0.300, 192.0.2.1, "2001:db8::1/32"]
    ports: [http, 443, 0]
    bogus: 1
    proto: sctp
deny:
  - to: [192.0.2.9]
options:
  log_rate: fast
"""
    assert problems_of(text) == [
        "policy.yaml:3:1: mode: duplicate key 'mode'",
        "policy.yaml:6:10: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host name",
        "policy.yaml:6:33: allow[0].to[2]: '2001:db8::1/32' has host bits set;"
        " did you mean 2001:db8::/32?",
        "policy.yaml:7:13: allow[0].ports[0]: 'http' is not a port or port range"
        " (e.g. 443 or 8000-8100)",
        "policy.yaml:7:24: allow[0].ports[2]: port 0 is outside 1-65535",
        "policy.yaml:8:5: allow[0].bogus: unknown key 'bogus' (known keys: name, to, ports, proto,"
        " for, comment, expires)",
        "policy.yaml:9:12: allow[0].proto: 'sctp' is not one of 'tcp', 'udp', 'icmp' or 'any'",
        "policy.yaml:11:5: deny[0]: missing required key 'name'",
        "policy.yaml:13:13: options.log_rate: 'fast' is not a rate such as '10/second'"
        " (second, minute, hour, day)",
    ]


def test_all_document_errors_at_once(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("bad..host\n")
    text = """\
version: 1
deny:
  - name: a
    to: ["@nope"]
allow:
  - name: a
    for: {user: no-such-user-xyz}
  - name: b
    proto: icmp
    ports: [7]
lists:
  feed: {file: feed.txt}
"""
    assert problems_of(text, base_dir=tmp_path) == [
        "policy.yaml:4:10: deny[0].to[0]: no list named 'nope' in 'lists'",
        "policy.yaml:6:11: allow[0].name: rule name 'a' is already used by deny[0]",
        "policy.yaml:7:17: allow[0].for.user: no user 'no-such-user-xyz' on this machine",
        "policy.yaml:10:12: allow[1].ports: ports need proto tcp, udp or any, not icmp",
        f"{tmp_path / 'feed.txt'}:1:1: lists.feed: not an IP address, network or host name",
    ]


def test_shape_errors_do_not_hide_reference_and_list_file_errors(tmp_path: Path) -> None:
    """Issue 14: reference errors appeared only after the shape errors were fixed."""
    (tmp_path / "feed.txt").write_text("bad..host\n")
    text = """\
version: 1
mode: enforcing
allow:
  - name: web
    to: [10.0.0.300, "@partnrs", "@feed:spamhaus-dorp"]
    ports: [http]
    for: {user: no-such-user-xyz}
  - name: web
    proto: sctp
lists:
  partners: [192.0.2.10]
  bad: {file: feed.txt}
  worse: [not an address]
options:
  log_rate: fast
"""
    assert problems_of(text, base_dir=tmp_path) == [
        "policy.yaml:2:7: mode: 'enforcing' is not one of 'enforce' or 'audit'; did you mean"
        " 'enforce'?",
        "policy.yaml:5:10: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host"
        " name",
        "policy.yaml:5:22: allow[0].to[1]: no list named 'partnrs' in 'lists'; did you mean"
        " 'partners'?",
        "policy.yaml:5:34: allow[0].to[2]: no feed named 'spamhaus-dorp'; did you mean"
        " 'spamhaus-drop'? (`outguard feeds list` shows the registry; add your own under 'feeds')",
        "policy.yaml:6:13: allow[0].ports[0]: 'http' is not a port or port range"
        " (e.g. 443 or 8000-8100)",
        "policy.yaml:7:17: allow[0].for.user: no user 'no-such-user-xyz' on this machine",
        "policy.yaml:8:11: allow[1].name: rule name 'web' is already used by allow[0]",
        "policy.yaml:9:12: allow[1].proto: 'sctp' is not one of 'tcp', 'udp', 'icmp' or 'any'",
        "policy.yaml:13:11: lists.worse[0]: 'not an address' is not an IP address, network or"
        " host name",
        "policy.yaml:15:13: options.log_rate: 'fast' is not a rate such as '10/second'"
        " (second, minute, hour, day)",
        f"{tmp_path / 'feed.txt'}:1:1: lists.bad: not an IP address, network or host name",
    ]


def test_did_you_mean_a_user(tmp_path: Path) -> None:
    (line,) = problems_of(RULE + "    for: {user: nobdy}\n")
    assert line == ("policy.yaml:4:17: allow[0].for.user: no user 'nobdy' on this machine;"
                    " did you mean 'nobody'?")


def test_unknown_key_without_a_close_one_lists_the_known_keys() -> None:
    (line,) = problems_of("version: 1\noptions: {zzz: 1}\n")
    assert line == ("policy.yaml:2:11: options.zzz: unknown key 'zzz' (known keys: default_action,"
                    " nflog_group, log_rate, forward)")


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nalerts: [{stdot: json}]\n",
     "policy.yaml:2:11: alerts[0].stdot: unknown key 'stdot'; did you mean 'stdout'?"),
    ("version: 1\ndns: {upstreams: [192.0.2.53], min_tll: 3}\n",
     "policy.yaml:2:32: dns.min_tll: unknown key 'min_tll'; did you mean 'min_ttl'?"),
    ("version: 1\nfeeds: {x: {url: 'https://a.test/x', fromat: plain}}\n",
     "policy.yaml:2:38: feeds.x.fromat: unknown key 'fromat'; did you mean 'format'?"),
    ("version: 1\noptions: {nflog_group: 70000}\n",
     "policy.yaml:2:24: options.nflog_group: 70000 is more than the maximum 65535"),
    ("version: 1\noptions: {forward: maybe}\n",
     "policy.yaml:2:20: options.forward: 'maybe': expected true or false"),
    ("version: 1\ndns: {upstreams: []}\n",
     "policy.yaml:2:18: dns.upstreams: needs at least 1 entry"),
    ("version: 1\nallow: [{name: a, comment: " + "x" * 201 + "}]\n",
     "policy.yaml:2:28: allow[0].comment: is longer than 200 characters"),
])
def test_messages_for_people(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_shape_and_document_errors_at_once() -> None:
    text = "version: 1\nallow:\n  - {name: a, to: [10.0.0.300]}\n  - {name: a, to: ['@nope']}\n"
    assert problems_of(text) == [
        "policy.yaml:3:20: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host name",
        "policy.yaml:4:12: allow[1].name: rule name 'a' is already used by allow[0]",
        "policy.yaml:4:20: allow[1].to[0]: no list named 'nope' in 'lists'",
    ]


def test_union_field_error_has_a_clean_path() -> None:
    (line,) = problems_of(RULE + "    for: {user: [1]}\n")
    assert line.startswith("policy.yaml:4:17: allow[0].for.user: ")


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "missing.yaml")
    assert [str(p) for p in err.value.problems] == [
        f"{tmp_path / 'missing.yaml'}:1:1: cannot read policy: No such file or directory"]


def test_policy_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "p.yaml")
    (problem,) = err.value.problems
    assert (problem.file, problem.message) == (str(tmp_path / "p.yaml"),
                                               "the policy is not UTF-8 text")


def test_policy_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "p.yaml")
    (problem,) = err.value.problems
    assert (problem.line, problem.col) == (2, 6)
