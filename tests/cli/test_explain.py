"""`outguard explain` through click's CliRunner: the wording, ports, audit mode, names with and
without `dns:`, feeds from the state directory (issue 14's explain defects).

The `--netns` path (names through /etc/netns/NAME/resolv.conf, never a query with `dns:`) runs
against a real dnsmasq in tests/kernel/test_policy_cmds_netns.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from outguard.cli.explain import explain, hosts_file
from outguard.cli.main import cli
from outguard.feeds.merge import FeedSet
from outguard.feeds.parse import parse
from outguard.feeds.store import FeedStore
from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow
from outguard.ruleset.lower import lower
from tests.cases import NAME_CASE_POLICY

GOOD = """\
version: 1
allow:
  - name: web-api
    to: [203.0.113.10, "2001:db8::10"]
    ports: [80, 443]
    proto: tcp
  - name: backup-as-nobody
    to: [203.0.113.12]
    ports: [80]
    for: {user: nobody}
  - name: host-any
    to: [203.0.113.40]
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
lists:
  spare: [192.0.2.9]
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def names(tmp_path: Path) -> Path:
    path = tmp_path / "names.yaml"
    path.write_text(NAME_CASE_POLICY)
    return path


@pytest.mark.parametrize(("args", "expected"), [
    (["--to", "203.0.113.10", "--port", "443", "--proto", "tcp"],
     "ALLOW  203.0.113.10 port 443/tcp: accepted by allow:web-api\n"
     "       allow rule 'web-api' matches: 203.0.113.10 is in its destinations;"
     " port 443/tcp is one of its ports\n"),
    (["--to", "198.51.100.9", "--port", "443", "--proto", "tcp"],
     "DENY   198.51.100.9 port 443/tcp: dropped by deny:attacker-net\n"
     "       deny rule 'attacker-net' matches: 198.51.100.9 is in its destinations;"
     " deny beats allow\n"),
    (["--to", "203.0.113.12", "--port", "80", "--proto", "tcp", "--user", "nobody"],
     "ALLOW  203.0.113.12 port 80/tcp: accepted by allow:backup-as-nobody\n"
     "       allow rule 'backup-as-nobody' matches: 203.0.113.12 is in its destinations;"
     " port 80/tcp is one of its ports; the socket belongs to uid 65534\n"),
    (["--to", "203.0.113.12", "--port", "80", "--proto", "tcp", "--user", "0"],
     "DENY   203.0.113.12 port 80/tcp: dropped by default\n"
     "       no allow rule matches, so the default applies\n"),
    (["--to", "2001:db8::10", "--port", "80", "--proto", "udp"],
     "DENY   2001:db8::10 port 80/udp: dropped by default\n"
     "       no allow rule matches, so the default applies\n"),
    (["--to", "203.0.113.10", "--proto", "icmp"],
     "DENY   203.0.113.10 icmp: dropped by default\n"
     "       no allow rule matches, so the default applies\n"),
])
def test_explain(good: Path, args: list[str], expected: str) -> None:
    result = run("explain", str(good), *args)
    assert result.exit_code == 0
    assert result.stdout == expected


def test_without_a_port_the_answer_says_which_ports_get_which_verdict(good: Path) -> None:
    """Was: "DENY … tcp: drop by default" for a destination allowed on ports 80 and 443."""
    result = run("explain", str(good), "--to", "203.0.113.10", "--proto", "tcp")
    assert result.exit_code == 0
    assert result.stdout == (
        "ALLOW  203.0.113.10 tcp ports 80, 443: accepted by allow:web-api\n"
        "       allow rule 'web-api' matches: 203.0.113.10 is in its destinations;"
        " the port is one of its ports\n"
        "DENY   203.0.113.10 tcp any other port: dropped by default\n"
        "       no allow rule matches, so the default applies\n")
    result = run("explain", str(good), "--to", "203.0.113.40", "--proto", "udp")
    assert result.stdout.splitlines()[0] == \
        "ALLOW  203.0.113.40 udp, any port: accepted by allow:host-any"
    result = run("explain", str(good), "--to", "203.0.113.12", "--user", "nobody")
    assert result.stdout.splitlines()[0] == \
        "ALLOW  203.0.113.12 tcp port 80: accepted by allow:backup-as-nobody"


NTP = """\
version: 1
allow:
  - {name: ntp, to: [203.0.113.30], ports: [123], proto: udp}
"""


def test_without_proto_both_tcp_and_udp_are_answered(tmp_path: Path) -> None:
    """`explain --to 203.0.113.30` (allowed only on udp/123) said DENY: --proto silently
    defaulted to tcp, and `--port 123` alone never considered udp."""
    path = tmp_path / "ntp.yaml"
    path.write_text(NTP)
    result = run("explain", str(path), "--to", "203.0.113.30")
    assert result.exit_code == 0
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        "DENY   203.0.113.30 tcp, any port: dropped by default",
        "ALLOW  203.0.113.30 udp port 123: accepted by allow:ntp",
        "DENY   203.0.113.30 udp any other port: dropped by default"]
    result = run("explain", str(path), "--to", "203.0.113.30", "--port", "123")
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        "DENY   203.0.113.30 port 123/tcp: dropped by default",
        "ALLOW  203.0.113.30 port 123/udp: accepted by allow:ntp"]
    doc = json.loads(run("explain", str(path), "--to", "203.0.113.30", "--port", "123",
                         "--json").stdout)
    assert [(d["proto"], d["rule"]) for d in doc] == [("tcp", "default"), ("udp", "allow:ntp")]
    result = run("explain", str(path), "--to", "203.0.113.30", "--proto", "icmp")
    assert result.stdout.splitlines()[0] == "DENY   203.0.113.30 icmp: dropped by default"


def test_a_rule_with_a_deadline_says_so(tmp_path: Path) -> None:
    path = tmp_path / "tmp.yaml"
    path.write_text(NTP.replace("proto: udp}", "proto: udp, expires: 2099-01-02T03:04:05Z}"))
    result = run("explain", str(path), "--to", "203.0.113.30", "--port", "123", "--proto", "udp")
    assert result.stdout.splitlines()[-1] == \
        "       until 2099-01-02T03:04:05+00:00: the rule expires then (`expires:`)"
    doc = json.loads(run("explain", str(path), "--to", "203.0.113.30", "--port", "123",
                         "--proto", "udp", "--json").stdout)
    assert doc[0]["expires"] == "2099-01-02T03:04:05+00:00"


def test_json_gives_the_ports_of_each_decision(good: Path) -> None:
    result = run("explain", str(good), "--to", "203.0.113.10", "--json", "--proto", "tcp")
    doc = json.loads(result.stdout)
    assert [(d["ports"], d["rule"], d["blocked"]) for d in doc] == [
        ([[80, 80], [443, 443]], "allow:web-api", False),
        ([[1, 79], [81, 442], [444, 65535]], "default", True)]
    result = run("explain", str(good), "--to", "203.0.113.10", "--port", "80", "--json",
                 "--proto", "tcp")
    assert json.loads(result.stdout) == [{
        "destination": "203.0.113.10", "name": None, "proto": "tcp", "for": None,
        "ports": [[80, 80]],
        "action": "allow",
        "verdict": "accept", "blocked": False, "audit": False, "rule": "allow:web-api",
        "reason": "allow rule 'web-api' matches: 203.0.113.10 is in its destinations;"
                  " port 80/tcp is one of its ports", "resolver": None, "note": None,
        "expires": None}]


def test_audit_mode_says_would_be_denied_not_deny_accept(tmp_path: Path) -> None:
    path = tmp_path / "audit.yaml"
    path.write_text(GOOD.replace("version: 1\n", "version: 1\nmode: audit\n"))
    result = run("explain", str(path), "--to", "198.51.100.9", "--port", "443", "--proto",
                 "tcp")
    assert result.stdout == (
        "AUDIT  198.51.100.9 port 443/tcp: would be denied by deny:attacker-net"
        " (audit: logged, not blocked)\n"
        "       deny rule 'attacker-net' matches: 198.51.100.9 is in its destinations;"
        " deny beats allow\n")
    assert "accept" not in result.stdout
    doc = json.loads(run("explain", str(path), "--to", "192.0.2.77", "--json").stdout)
    assert [(d["proto"], d["action"], d["blocked"], d["audit"], d["ports"]) for d in doc] == [
        ("tcp", "deny", False, True, "any"), ("udp", "deny", False, True, "any")]


# --- names with dns: decided by name, never resolved -------------------------------------------

def test_with_dns_a_name_the_resolver_refuses_is_a_deny_not_an_error(names: Path) -> None:
    """Was: "error: 'c2.example.test' does not resolve; give an address", exit 1 (or, after
    `dns install`, a query to outguard's own resolver and an incident of outguard itself)."""
    result = run("explain", str(names), "--to", "c2.example.test", "--port", "443", "--proto",
                 "tcp")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "DENY   c2.example.test port 443/tcp: dropped by deny:c2\n"
        "       deny rule 'c2' names c2.example.test: outguard's resolver answers REFUSED,"
        " so nothing can connect to c2.example.test\n")
    result = run("explain", str(names), "--to", "unlisted.example.test")
    assert result.stdout.startswith("DENY   unlisted.example.test tcp, any port: dropped by"
                                    " default\n       no rule names unlisted.example.test:")


def test_with_dns_a_name_in_a_list_is_allowed_as_the_resolver_allows_it(names: Path) -> None:
    """decide ignored names in `lists:` entries: explain said default while the resolver and
    the kernel allowed the name."""
    result = run("explain", str(names), "--to", "api2.example.test", "--port", "443")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[:3] == [
        "ALLOW  api2.example.test port 443/tcp: accepted by allow:via-list",
        "       allow rule 'via-list' matches: api2.example.test is one of its names;"
        " port 443/tcp is one of its ports",
        "       outguard's resolver answers api2.example.test (allow rule 'via-list' names"
        " api2.example.test)"]
    result = run("explain", str(names), "--to", "x.cdn.example.test", "--json")
    doc = json.loads(result.stdout)
    assert next((d["ports"], d["rule"]) for d in doc) == ([[443, 443]], "allow:via-list")


def test_with_dns_ports_and_deny_by_list_name(names: Path) -> None:
    result = run("explain", str(names), "--to", "dir.example.test")
    lines = result.stdout.splitlines()
    assert "DENY   dir.example.test tcp ports 389, 636: dropped by deny:no-ldap-names" in lines
    assert "ALLOW  dir.example.test tcp any other port: accepted by allow:directory" in lines


def test_names_in_etc_hosts_are_decided_by_their_addresses(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.1 localhost\n203.0.113.5  app.example.test  App2 # x\n"
                     "bad line\n")
    assert hosts_file("app.example.test", hosts) == ["203.0.113.5"]
    assert hosts_file("app2", hosts) == ["203.0.113.5"]
    assert hosts_file("example.test", hosts) == []
    assert hosts_file("x", tmp_path / "missing") == []


def test_feeds_come_from_the_state_directory(tmp_path: Path) -> None:
    """explain (and compile) read a url feed's last good copy from --state-dir, as apply does."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndeny:\n  - name: intel\n    to: ['@feed:spamhaus-drop']\n"
                    "allow:\n  - name: all-https\n    ports: [443]\n    proto: tcp\n")
    state = tmp_path / "state"
    FeedStore(state / "feeds").write_copy(
        "spamhaus-drop", FeedSet.of(parse(b"198.51.100.0/24\n", "plain")))
    result = run("explain", str(path), "--to", "198.51.100.7", "--port", "443",
                 "--state-dir", str(state))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("DENY   198.51.100.7 port 443/tcp: dropped by deny:intel")
    result = run("compile", str(path), "--state-dir", str(state))
    assert "198.51.100.0/24" in result.stdout


# --- errors ----------------------------------------------------------------------------------

def test_explain_unknown_user(good: Path) -> None:
    result = run("explain", str(good), "--to", "203.0.113.10", "--user", "no-such-user-xyz")
    assert result.exit_code == 1
    assert result.stderr == "error: no user 'no-such-user-xyz' on this machine\n"


def test_explain_bad_destination(good: Path) -> None:
    result = run("explain", str(good), "--to", "10.0.0.300")
    assert result.exit_code == 1
    assert result.stderr == ("error: '10.0.0.300' is not an IP address, network or host name\n")
    result = run("explain", str(good), "--to", "@spare")
    assert result.exit_code == 1
    assert result.stderr == "error: '@spare' is not an address or a host name\n"


def test_explain_bad_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nallow:\n  - name: x\n    to: [10.0.0.300]\n")
    result = run("explain", str(path), "--to", "203.0.113.10")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "1 error(s); nothing was applied"


def test_netns_must_exist(good: Path) -> None:
    result = CliRunner().invoke(cli, ["explain", str(good), "--to", "203.0.113.10", "--netns",
                                      "og-no-such-ns-xyz"])
    assert result.exit_code == 2
    assert "no network namespace named 'og-no-such-ns-xyz'" in result.output


def test_with_dns_a_name_in_etc_hosts_is_decided_by_its_bare_addresses(tmp_path: Path) -> None:
    """The resolver never sees a name /etc/hosts answers: its rule's set does not get the
    address, so the kernel decides the bare address (here: the default)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("203.0.113.5 api.example.test\n")
    ruleset = lower(load_text(NAME_CASE_POLICY), resolver=lambda n: [])
    [answer] = explain(ruleset, "api.example.test", Flow(port=443), hosts)
    assert (answer.destination, answer.name, answer.decision.rule) == (
        "203.0.113.5", "api.example.test", "default")
    assert answer.note is not None and str(hosts) in answer.note
    [answer] = explain(ruleset, "api.example.test", Flow(port=443), tmp_path / "none")
    assert (answer.destination, answer.decision.rule) == ("api.example.test", "allow:api")
