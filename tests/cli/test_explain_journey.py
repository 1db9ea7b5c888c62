"""`explain` as the journey trial met it: without `--user` it says whom a `for:` rule allows
(defect 5), `--json --port` gives the port (defect 5), and an address the resolver put into a
name rule's set is decided with that name, read from the state directory (defect 4)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner, Result

from outguard.cli.explain_sets import in_sets
from outguard.cli.main import cli
from outguard.dns import cache as dcache
from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.lower import lower
from tests.dns.helpers import answer, query

NTP = """\
version: 1
allow:
  - {name: ntp, to: [203.0.113.40], ports: [123], proto: udp, for: {user: root}}
  - {name: web, to: [203.0.113.40], ports: [443], proto: tcp}
"""
NAMED = """\
version: 1
dns: {listen: "127.0.0.1:53", upstreams: ["192.0.2.53"], min_ttl: 300, grace: 60}
allow:
  - {name: curl, to: [api.example.test], ports: [80, 443], proto: tcp, for: {user: nobody}}
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_without_user_it_says_whom_a_for_rule_allows(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(NTP)
    result = run("explain", str(policy), "--to", "203.0.113.40", "--port", "123", "--proto",
                 "udp", "--state-dir", str(tmp_path))
    lines = result.stdout.splitlines()
    assert lines[0] == ("DENY   203.0.113.40 port 123/udp (users no for: rule names): dropped by"
                        " default")
    assert lines[2] == "ALLOW  203.0.113.40 port 123/udp (user root): accepted by allow:ntp"
    # with --user the answer is for that user alone, unmarked
    result = run("explain", str(policy), "--to", "203.0.113.40", "--port", "123", "--proto",
                 "udp", "--user", "root", "--state-dir", str(tmp_path))
    assert result.stdout.splitlines()[0] == \
        "ALLOW  203.0.113.40 port 123/udp: accepted by allow:ntp"
    # where no for: changes the answer, nothing is said about users
    result = run("explain", str(policy), "--to", "203.0.113.40", "--port", "443", "--proto",
                 "tcp", "--state-dir", str(tmp_path))
    assert result.stdout.splitlines()[0] == \
        "ALLOW  203.0.113.40 port 443/tcp: accepted by allow:web"


def test_json_with_a_port_gives_the_port_and_whom(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(NTP)
    doc = json.loads(run("explain", str(policy), "--to", "203.0.113.40", "--port", "443",
                         "--json", "--state-dir", str(tmp_path)).stdout)
    assert [(d["proto"], d["ports"], d["for"], d["rule"]) for d in doc] == [
        ("tcp", [[443, 443]], None, "allow:web"), ("udp", [[443, 443]], None, "default")]
    doc = json.loads(run("explain", str(policy), "--to", "203.0.113.40", "--port", "123",
                         "--proto", "udp", "--json", "--state-dir", str(tmp_path)).stdout)
    assert [(d["for"], d["rule"]) for d in doc] == [
        ("users no for: rule names", "default"), ("user root", "allow:ntp")]


def _saved(tmp: Path, expires_in: float) -> str:
    """The state directory as the agent leaves it: the resolver answered api.example.test with
    203.0.113.10 and put it into the curl rule's set (dns-cache.json)."""
    rs = lower(load_text(NAMED))
    base = rs.allow[0].fqdn_set
    assert base is not None
    cache = dcache.AnswerCache()
    now = time.time()
    wire = answer(query("api.example.test", "A"),
                  [("api.example.test.", 60, "A", "203.0.113.10")])
    cache.put(("api.example.test", 1, 1, False), dcache.entry_of(wire, "api.example.test", now))
    tracker = dcache.SetTracker()
    tracker.written([(f"{base}_4", "203.0.113.10", int(expires_in))], now)
    dcache.save(tmp / dcache.FILE, dcache.snapshot(cache, tracker, now))
    return f"{base}_4"


def test_an_address_in_a_name_rules_set_is_decided_with_the_name(tmp_path: Path) -> None:
    set_name = _saved(tmp_path, 360)
    policy = tmp_path / "p.yaml"
    policy.write_text(NAMED)
    result = run("explain", str(policy), "--to", "203.0.113.10", "--port", "443", "--proto",
                 "tcp", "--user", "nobody", "--state-dir", str(tmp_path))
    lines = result.stdout.splitlines()
    assert lines[0] == "ALLOW  api.example.test (203.0.113.10) port 443/tcp: accepted by allow:curl"
    assert lines[2].startswith("       note: 203.0.113.10 is in the addresses the resolver put in"
                               f" for api.example.test (allow:curl, @{set_name}) until ")
    # the address alone follows: what decides it once the entry expires
    assert lines[3] == "DENY   203.0.113.10 port 443/tcp: dropped by default"
    # never a flat DENY for what the kernel lets out: the first answer is the set's
    doc = json.loads(run("explain", str(policy), "--to", "203.0.113.10", "--port", "443",
                         "--proto", "tcp", "--user", "nobody", "--json",
                         "--state-dir", str(tmp_path)).stdout)
    assert [(d["name"], d["rule"]) for d in doc] == [("api.example.test", "allow:curl"),
                                                     (None, "default")]
    # without --user: curl's set lets nobody out, no one else
    result = run("explain", str(policy), "--to", "203.0.113.10", "--port", "443", "--proto",
                 "tcp", "--state-dir", str(tmp_path))
    assert "ALLOW  api.example.test (203.0.113.10) port 443/tcp (user nobody): accepted by" \
        " allow:curl" in result.stdout


def test_the_set_answer_is_decides_answer_with_the_name(tmp_path: Path) -> None:
    _saved(tmp_path, 360)
    rs = lower(load_text(NAMED))
    data = dcache.read(tmp_path / dcache.FILE)
    now = time.time()
    got = in_sets(rs, data, "203.0.113.10", now)
    assert [(s.name, s.rule) for s in got] == [("api.example.test", "allow:curl")]
    flow = Flow(dst="203.0.113.10", port=443, uid=65534, name=got[0].name)
    assert decide(rs, flow).rule == "allow:curl"
    # an expired entry, another address, or a policy without dns: find nothing
    assert in_sets(rs, data, "203.0.113.10", now + 400) == []
    assert in_sets(rs, data, "203.0.113.11", now) == []
    assert in_sets(lower(load_text(NTP)), data, "203.0.113.10", now) == []


def test_no_saved_state_changes_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(NAMED)
    result = run("explain", str(policy), "--to", "203.0.113.10", "--port", "443", "--proto",
                 "tcp", "--user", "nobody", "--state-dir", str(tmp_path))
    assert result.stdout.splitlines()[0] == "DENY   203.0.113.10 port 443/tcp: dropped by default"
