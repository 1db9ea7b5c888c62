"""`expires:` in the kernel: a rule stops matching at its moment, without a re-apply.

The kernel checks `meta time` itself; outguard only drops a rule at apply time once it has
expired. An allow rule that expires while the test runs must pass traffic before its moment and
drop it after, in agreement with `decide`; and `nft list ruleset` must show the moment the policy
names (nft 1.0.6 reads the number as seconds: nanoseconds overflowed into the year 2213).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.lower import lower
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

LEAD = 6.0  # seconds from the apply to the expiry: room for a loaded machine


def test_an_allow_rule_that_expires_during_the_test_stops_passing(topology: Topology) -> None:
    topo = topology
    topo.add_addresses("203.0.113.10", "2001:db8:10::10", "203.0.113.11")
    until = (datetime.now(UTC) + timedelta(seconds=LEAD + 1)).replace(microsecond=0)
    text = ("version: 1\nallow:\n"
            "  - name: temporary\n    to: [203.0.113.10, \"2001:db8:10::10\"]\n    ports: [443]\n"
            f"    expires: {until.isoformat().replace('+00:00', 'Z')}\n"
            "  - name: lasting\n    to: [203.0.113.11]\n    ports: [443]\n")
    temporary = [Probe("203.0.113.10", 443), Probe("2001:db8:10::10", 443),
                 Probe("203.0.113.10", 443, "udp")]
    lasting = Probe("203.0.113.11", 443)
    topo.apply(text)
    listing = topo.ruleset()
    shown = until.strftime("%Y-%m-%d %H:%M:%S")
    assert f'meta time < "{shown}"' in listing, listing  # the machine's zone is UTC

    ruleset = lower(load_text(text))
    flow = Flow(dst="203.0.113.10", port=443, proto="tcp")
    assert time.time() < until.timestamp() - 1, "the apply took too long to test this"
    assert topo.passes(*temporary, lasting) == [True, True, True, True]
    assert decide(ruleset, flow).rule == "allow:temporary"

    time.sleep(max(0.0, until.timestamp() + 1 - time.time()))
    assert topo.passes(*temporary, lasting) == [False, False, False, True]
    assert decide(ruleset, flow).rule == "default"
    assert decide(ruleset, flow, now=until - timedelta(seconds=1)).rule == "allow:temporary"
    assert decide(ruleset, flow, now=until).rule == "default"

