"""What an NFLOG prefix says: the rule, and what the kernel did with the packet."""

from __future__ import annotations

import json

import pytest

from outguard.dns.events import DnsEvent
from outguard.events import parse_prefix, render_prefix
from outguard.monitor.dns_incidents import event_of


@pytest.mark.parametrize(("key", "verdict", "action"), [
    ("default", "drop", "dropped"), ("deny:attacker-net", "drop", "dropped"),
    ("default", "reject", "rejected"), ("deny:reject", "reject", "rejected"),
    ("deny:x.y-z_1", "accept", "logged-only"), ("default", "accept", "logged-only"),
])
def test_the_compiler_prefix_reads_back(key: str, verdict: str, action: str) -> None:
    assert parse_prefix(render_prefix(key, verdict)) == (key, action)


def test_prefixes_that_are_not_ours_or_unknown_words() -> None:
    assert parse_prefix("IN=eth0 ") == ("IN=eth0 ", None)
    assert parse_prefix("og:deny:x maybe") == ("deny:x", None)


@pytest.mark.parametrize(("action", "expected"), [("blocked", "refused"),
                                                  ("blocklisted", "refused"),
                                                  ("audit", "logged-only")])
def test_blocked_dns_queries_say_what_was_done(action: str, expected: str) -> None:
    ev = event_of(DnsEvent(time=1700000000.0, client="127.0.0.1:40001", qname="x.example.test",
                           qtype="A", action=action, rule="default", reason="no rule",
                           rcode="REFUSED"))
    assert ev is not None
    assert (ev.packet.rule, ev.packet.action) == ("dns:default", expected)


def test_a_learned_flow_round_trips_through_json() -> None:
    from datetime import UTC, datetime

    from outguard.events import LearnedFlow

    flow = LearnedFlow(
        exe="/usr/bin/curl", cmdline=("curl", "https://api.example.test"), user="www-data",
        uid=33, unit="web.service", cgroup="/system.slice/web.service", container=None,
        dst="2001:db8::5", port=443, proto="tcp", names=("api.example.test",), count=3,
        first_seen=datetime(2026, 12, 1, tzinfo=UTC), last_seen=datetime(2026, 12, 2, tzinfo=UTC),
        decision="allow:api",
    )
    assert LearnedFlow.from_json(json.loads(json.dumps(flow.to_json()))) == flow
    assert flow.key == ("/usr/bin/curl", "www-data", "web.service", None, "2001:db8::5", 443, "tcp")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "JSON object"),
        ({"dst": "192.0.2.1", "proto": "tcp", "count": 1, "first_seen": "2026-12-01"}, "last_seen"),
        ({"dst": "192.0.2.1", "proto": "tcp", "count": 0, "first_seen": "2026-12-01",
          "last_seen": "2026-12-01"}, "count"),
        ({"dst": "192.0.2.1", "proto": "tcp", "port": 70000, "count": 1,
          "first_seen": "2026-12-01", "last_seen": "2026-12-01"}, "port"),
    ],
)
def test_a_learned_flow_that_is_not_one_is_named(data: object, says: str) -> None:
    from outguard.events import LearnedFlow

    with pytest.raises(ValueError, match=says):
        LearnedFlow.from_json(data)
