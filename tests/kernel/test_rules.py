"""kernel.rules: a digest per chain that moves when a rule changes, not when traffic counts."""

from __future__ import annotations

import socket

import pytest

from outguard.kernel import netns as ns
from outguard.kernel.netns import NetnsThread
from outguard.kernel.rules import rule_digests

pytestmark = pytest.mark.kernel


def test_rule_digests_follow_rules_not_counters(netns: str) -> None:
    def nft(*args: str) -> None:
        ns.run(netns, ["nft", *args])

    def digests() -> dict[str, str]:
        with NetnsThread(netns) as thread:
            return thread.call(rule_digests)

    assert digests() == {}
    ns.run(netns, ["nft", "-f", "-"], input=(
        "table inet outguard {\n chain output {\n  type filter hook output priority 0;\n"
        "  oif \"lo\" counter accept comment \"loopback\"\n }\n chain empty {\n }\n}\n"))
    first = digests()
    assert list(first) == ["output"]
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", ("127.0.0.1", 9))

    with NetnsThread(netns) as thread:
        thread.call(send)
    assert "packets 0 " not in ns.run(netns, ["nft", "list", "chain", "inet", "outguard",
                                               "output"]).stdout
    assert digests() == first  # the counter moved, the rule did not
    nft("insert", "rule", "inet", "outguard", "output", "ip", "daddr", "198.51.100.7", "accept")
    assert digests() != first
