"""Loading valid policies: the issue's example as written, the lab policy, YAML details."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.policy.load import load_policy, load_text
from outguard.policy.loaded import format_path
from outguard.policy.model import Owner
from outguard.policy.targets import Target
from tests.cases import CASE_POLICY

ROOT = Path(__file__).resolve().parents[2]

# Verbatim from the issue.
ISSUE_MINIMAL = """\
version: 1
mode: enforce
allow:
  - name: web-api
    to: [203.0.113.10, "2001:db8::10"]
    ports: [80, 443]
  - name: backup-as-nobody
    to: [203.0.113.12]
    ports: [80]
    for: {user: nobody}
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
"""


def test_the_issues_minimal_example_loads_as_written() -> None:
    policy = load_text(ISSUE_MINIMAL, "policy.yaml")
    doc = policy.doc
    assert doc.version == 1 and doc.mode == "enforce"
    web, backup = doc.allow
    assert (web.name, web.to, web.ports, web.proto, web.owner) == (
        "web-api", [Target("addr", "203.0.113.10", 4), Target("addr", "2001:db8::10", 6)],
        [(80, 80), (443, 443)], "any", None)
    assert (backup.name, backup.to, backup.ports) == (
        "backup-as-nobody", [Target("addr", "203.0.113.12", 4)], [(80, 80)])
    assert backup.owner == Owner(user="nobody")
    (attacker,) = doc.deny
    assert (attacker.name, attacker.to) == ("attacker-net", [Target("net", "198.51.100.0/24", 4)])
    assert doc.lists == {} and doc.options.default_action == "drop"
    assert doc.options.rate() == (10, "second")
    assert policy.warnings == []
    assert policy.digest == hashlib.sha256(ISSUE_MINIMAL.encode()).hexdigest()
    assert [(s, i, r.name) for s, i, r in policy.rules()] == [
        ("deny", 0, "attacker-net"), ("allow", 0, "web-api"), ("allow", 1, "backup-as-nobody")]


def test_the_lab_policy_loads() -> None:
    policy = load_policy(ROOT / "examples" / "lab-policy.yaml")
    assert [r.name for _s, _i, r in policy.rules()] == [
        "attacker-net", "web-api", "package-mirror", "lab-dns", "backup-as-nobody"]
    assert policy.source == str(ROOT / "examples" / "lab-policy.yaml")
    assert [w.path for w in policy.warnings] == ["allow[1].to[0]"]  # the host name


def test_the_case_policy_loads() -> None:
    policy = load_text(CASE_POLICY)
    assert len(policy.doc.deny) == 7 and len(policy.doc.allow) == 15


def test_positions_of_values_and_keys() -> None:
    policy = load_text(ISSUE_MINIMAL)
    assert policy.positions.of(("allow", 0, "to", 1)) == (5, 24)
    assert policy.positions.of(("allow", 1, "for", "user")) == (10, 17)
    assert policy.positions.of(("allow", 1, "for", "user"), key=True) == (10, 11)
    # a path without a position falls back to its nearest ancestor
    assert policy.positions.of(("allow", 1, "for", "group")) == (10, 10)
    assert policy.positions.of(("nothing", 3)) == (1, 1)


@pytest.mark.parametrize(("path", "text"), [
    ((), ""), (("allow", 2, "to", 0), "allow[2].to[0]"), (("lists", "x", 1), "lists.x[1]"),
    (("options", "log_rate"), "options.log_rate"),
])
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


# --- YAML 1.1 surprises do not reach a policy --------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("no", "no"), ("yes", "yes"), ("on", "on"), ("off", "off"), ("y", "y"),
    ("22:22", "22:22"),                    # not base 60
    ("0o17", "0o17"), ("0x1F", "0x1F"), ("1_000", "1_000"), ("1e3", "1e3"),
    ("2001-01-01", "2001-01-01"),          # not a date
    ("~x", "~x"),
])
def test_yaml_scalars_stay_text(value: str, expected: str) -> None:
    policy = load_text(f"version: 1\nallow:\n  - name: a\n    comment: {value}\n")
    assert policy.doc.allow[0].comment == expected


def test_unquoted_ipv6_addresses() -> None:
    policy = load_text("version: 1\nallow:\n  - name: a\n    to:\n      - 2001:db8::10\n"
                       "      - 2001:db8:1::/48\n    ports: [443]\n")
    assert [t.value for t in policy.doc.allow[0].to or []] == ["2001:db8::10", "2001:db8:1::/48"]


def test_null_and_booleans() -> None:
    policy = load_text("version: 1\nallow:\n  - name: a\n    to: ~\n    ports: null\n"
                       "options: {forward: true}\n")
    assert policy.doc.allow[0].to is None and policy.doc.allow[0].ports is None
    assert policy.doc.options.forward is True


def test_explicit_tags_other_than_core_are_errors() -> None:
    with pytest.raises(PolicyError) as err:
        load_text("version: 1\nallow:\n  - name: !!python/name:os.system a\n")
    assert any("unsupported YAML tag" in p.message for p in err.value.problems)


def test_canonical_forms() -> None:
    policy = load_text('version: 1\ndeny:\n  - name: a\n    to: ["2001:DB8:0::1", '
                       '"2001:db8:0:0::/64", Example.COM., "*.Example.com", 0.0.0.0/0]\n')
    assert [(t.kind, t.value) for t in policy.doc.deny[0].to or []] == [
        ("addr", "2001:db8::1"), ("net", "2001:db8::/64"), ("host", "example.com"),
        ("wildcard", "*.example.com"), ("net", "0.0.0.0/0")]


def test_ports_forms() -> None:
    policy = load_text('version: 1\nallow:\n  - name: a\n    ports: [1, "2-3", " 4 - 5 ", "65535"]\n')
    assert policy.doc.allow[0].ports == [(1, 1), (2, 3), (4, 5), (65535, 65535)]


def test_owner_forms() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, for: {user: 0, group: 65534}}\n"
                       "  - {name: b, for: {unit: nginx.service}}\n"
                       "  - {name: c, for: {cgroup: /system.slice/x.service}}\n")
    assert [r.owner for r in policy.doc.allow] == [
        Owner(user=0, group=65534), Owner(unit="nginx.service"),
        Owner(cgroup="/system.slice/x.service")]


def test_expires_forms() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, expires: 2030-01-02T03:04:05Z}\n"
                       "  - {name: b, expires: '2030-01-02T03:04:05+02:00'}\n"
                       "  - {name: c, expires: 2030-01-02}\n")
    a, b, c = (r.expires for r in policy.doc.allow)
    assert a == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert b is not None and b.astimezone(UTC) == datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert c is not None and (c.year, c.month, c.day) == (2030, 1, 2)


# --- lists ------------------------------------------------------------------------------------

def test_inline_lists_and_list_files(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_bytes(b"# feed\n198.51.100.1\n198.51.100.0/25\n\n2001:db8::1\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\nmode: audit\ndeny:\n  - {name: f, to: ['@feed', '@inline']}\n"
        "lists:\n  feed: {file: feed.txt}\n  inline: [192.0.2.7, example.test]\n"
        "  long-form: {items: [192.0.2.8]}\n")
    policy = load_policy(tmp_path / "p.yaml")
    feed, inline = policy.lists["feed"], policy.lists["inline"]
    assert feed.file == str(tmp_path / "feed.txt")
    assert feed.digest == hashlib.sha256((tmp_path / "feed.txt").read_bytes()).hexdigest()
    assert [t.value for t in feed.targets] == ["198.51.100.1", "198.51.100.0/25", "2001:db8::1"]
    assert inline.file is None
    assert [t.value for t in inline.targets] == ["192.0.2.7", "example.test"]
    assert [t.value for t in policy.lists["long-form"].targets] == ["192.0.2.8"]
    assert [w.path for w in policy.warnings] == ["lists.long-form"]  # unused


def test_absolute_list_file(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("198.51.100.1\n")
    policy = load_text(f"version: 1\ndeny:\n  - {{name: f, to: ['@x']}}\n"
                       f"lists:\n  x: {{file: {tmp_path / 'feed.txt'}}}\n",
                       base_dir=Path("/nonexistent"))
    assert [t.value for t in policy.lists["x"].targets] == ["198.51.100.1"]


def test_known_list_files_are_not_parsed_again(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("198.51.100.1\n")
    digest = hashlib.sha256(feed.read_bytes()).hexdigest()
    asked: list[str] = []

    def known(d: str) -> bool:
        asked.append(d)
        return True

    policy = load_text("version: 1\nlists:\n  x: {file: feed.txt}\n", base_dir=tmp_path,
                       known_lists=known)
    assert asked == [digest]
    assert policy.lists["x"].digest == digest
    feed.write_text("198.51.100.2\n")  # read lazily, on first use
    assert [t.value for t in policy.lists["x"].targets] == ["198.51.100.2"]


# --- crashes: any input must give a Policy or a PolicyError ------------------------------------

CRASHERS = [
    pytest.param("version: 1\nallow: &a\n  - *a\n", id="recursive-alias"),
    pytest.param("version: 1\nallow: " + "[" * 3000 + "]" * 3000 + "\n", id="deep-nesting"),
    pytest.param('version: 1\nlists:\n  x: {file: "a\\0b"}\n', id="nul-in-list-file-name"),
    pytest.param('version: 1\nallow:\n  - {name: a, for: {user: "a\\0b"}}\n', id="nul-in-user"),
    pytest.param('version: 1\nallow:\n  - {name: a, for: {group: "a\\0b"}}\n', id="nul-in-group"),
    pytest.param('version: 1\nallow:\n  - {name: a, expires: "0001-01-01T00:00:00+01:00"}\n',
                 id="expires-before-year-1-utc"),
    pytest.param('version: 1\nallow:\n  - {name: a, expires: "9999-12-31T23:59:59-01:00"}\n',
                 id="expires-after-year-9999-utc"),
]


@pytest.mark.parametrize("text", CRASHERS)
def test_hostile_inputs_give_a_policy_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_text(text, base_dir=tmp_path)
    assert all(p.line >= 1 and p.col >= 1 and p.message for p in err.value.problems)


@pytest.mark.parametrize(("text", "where"), [
    pytest.param('version: 1\nallow:\n  - {name: a, for: {user: "a\\0b"}}\n',
                 (3, 27, "allow[0].for.user"), id="nul-in-user"),
    pytest.param('version: 1\nallow:\n  - {name: a, for: {group: "a\\0b"}}\n',
                 (3, 28, "allow[0].for.group"), id="nul-in-group"),
    pytest.param('version: 1\nlists:\n  x: {file: "a\\0b"}\n', (3, 13, "lists.x.file"),
                 id="nul-in-list-file-name"),
    pytest.param('version: 1\nallow:\n  - {name: a, expires: "0001-01-01T00:00:00+01:00"}\n',
                 (3, 24, "allow[0].expires"), id="expires-before-year-1-utc"),
])
def test_hostile_values_are_reported_where_they_are(text: str, where: tuple[int, int, str],
                                                    tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_text(text, base_dir=tmp_path)
    assert [(p.line, p.col, p.path) for p in err.value.problems] == [where]


def test_binary_list_file(tmp_path: Path) -> None:
    (tmp_path / "feed.bin").write_bytes(b"198.51.100.1\n\x00\x01\x02\n")
    with pytest.raises(PolicyError) as err:
        load_text("version: 1\nlists:\n  x: {file: feed.bin}\n", base_dir=tmp_path)
    assert [(p.line, p.path) for p in err.value.problems] == [(2, "lists.x")]


# --- values that load but should not ------------------------------------------------------------

def test_rule_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(PolicyError):
        load_text('version: 1\ndeny:\n  - {name: "web\\n", to: [192.0.2.1]}\n')


@pytest.mark.parametrize("owner", ["user: -1", "group: -5", "user: 4294967296"])
def test_negative_or_huge_ids_are_refused(owner: str) -> None:
    with pytest.raises(PolicyError):
        load_text(f"version: 1\nallow:\n  - {{name: a, for: {{{owner}}}}}\n")


@pytest.mark.parametrize("text", ["version: true\n", "version: 1\noptions: {nflog_group: true}\n"])
def test_booleans_are_not_numbers(text: str) -> None:
    with pytest.raises(PolicyError):
        load_text(text)
