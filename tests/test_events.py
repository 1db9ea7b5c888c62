"""What an NFLOG prefix says: the rule, and what the kernel did with the packet."""

from __future__ import annotations

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
