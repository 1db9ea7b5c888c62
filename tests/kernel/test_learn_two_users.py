"""Two users to the same destination and port are two learned flows, each with its user."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store.sqlite import SQLiteStore
from tests.kernel.test_learn_counts import API, POLICY
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel


def test_two_users_to_one_destination_are_learned_apart(topology: Topology) -> None:
    topology.add_addresses(API)
    policy = topology.write_policy(POLICY)
    opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
    with AgentHandle(opts):
        topology.probe([Probe(API, 443, uid=0)])
        time.sleep(1.0)
        topology.probe([Probe(API, 443, uid=65534)])
        time.sleep(2.5)
    flows = SQLiteStore(Path(opts.store_location()), readonly=True).flows()
    users = sorted((f.uid, f.count) for f in flows if f.dst == API and f.port == 443)
    assert users == [(0, 1), (65534, 1)], flows


def test_two_users_learned_without_a_policy(topology: Topology) -> None:
    import json
    import threading

    topology.add_addresses(API)
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(p=topology.cli("learn", "--for", "6s")))
    t.start()
    time.sleep(2.5)
    topology.probe([Probe(API, 443, uid=0)])
    time.sleep(1.0)
    topology.probe([Probe(API, 443, uid=65534)])
    t.join(30)
    proc = topology.cli("flows", "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    users = sorted((r["uid"], r["count"]) for r in rows if r["dst"] == API and r["port"] == 443)
    assert users == [(0, 1), (65534, 1)], (rows, result)
