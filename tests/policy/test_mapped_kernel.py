"""Issue 14 (hostile tester): a deny of `::ffff:203.0.113.66` was accepted and never matched —
the connection went through. A socket that connects to an IPv4-mapped address sends an IPv4
packet; the policy now reads such an entry as the IPv4 address. Checked with real traffic in the
two-namespace topology of tests/kernel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kernel.conftest import kernel_skip_reason, new_netns
from tests.kernel.topology import Probe, Topology, build

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
allow:
  - {name: web, to: [203.0.113.0/24], ports: [443], proto: tcp}
deny:
  - {name: mapped, to: ["::ffff:203.0.113.66"]}
"""


@pytest.fixture
def topology() -> Iterator[Topology]:
    assert kernel_skip_reason() is None, kernel_skip_reason()
    with build(new_netns) as topo:
        yield topo


def test_a_deny_of_an_ipv4_mapped_address_blocks_the_connection(topology: Topology) -> None:
    topology.add_addresses("203.0.113.10", "203.0.113.66")
    topology.apply(POLICY)
    assert topology.passes(Probe("203.0.113.10", 443), Probe("::ffff:203.0.113.10", 443),
                           Probe("203.0.113.66", 443), Probe("::ffff:203.0.113.66", 443)) \
        == [True, True, False, False]
    assert topology.counters()["deny.mapped"] >= 2
