"""Learning counts in the kernel: many connections to one destination are all recorded with
one NFLOG message; a full counting set falls back to logging each flow, counted; the books
balance either way."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from outguard.nftables import nft_learn
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store.sqlite import SQLiteStore
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

API = "198.51.100.7"
POLICY = f"""
version: 1
learn: true
allow:
  - {{name: api, to: [{API}], ports: [443], proto: tcp}}
  - {{name: udp, to: [{API}], ports: ["1000-1010"], proto: udp}}
"""


def connect_many(topo: Topology, n: int) -> int:
    """`n` connections to the peer's closed port 443: a new flow each (the peer resets)."""
    def go() -> int:
        refused = 0
        for _ in range(n):
            with socket.socket() as s:
                s.settimeout(2)
                try:
                    s.connect((API, 443))
                except ConnectionRefusedError:
                    refused += 1
        return refused
    return int(topo.thread.call(go))


def send_udp(topo: Topology, ports: list[int]) -> None:
    def go() -> None:
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (API, port))
    topo.thread.call(go)


def run(topology: Topology, traffic: list[tuple[str, object]]) -> tuple[dict[str, object],
                                                                       dict[tuple[int | None,
                                                                                  str], int]]:
    policy = topology.write_policy(POLICY)
    opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
    with AgentHandle(opts) as agent:
        for kind, arg in traffic:
            if kind == "tcp":
                assert connect_many(topology, arg) == arg  # type: ignore[arg-type]
            else:
                send_udp(topology, arg)  # type: ignore[arg-type]
        time.sleep(1.5)  # a flush or so
    books = agent.running.learn_books
    assert books is not None, "the learner did not report"
    flows = SQLiteStore(Path(opts.store_location()), readonly=True).flows()
    counts: dict[tuple[int | None, str], int] = {}
    for f in flows:
        if f.dst == API:
            counts[(f.port, f.proto)] = counts.get((f.port, f.proto), 0) + f.count
    return books, counts


def test_many_connections_to_one_destination_are_all_counted_with_one_message(
        topology: Topology) -> None:
    topology.add_addresses(API)
    books, counts = run(topology, [("tcp", 300)])
    assert counts == {(443, "tcp"): 300}
    assert books["kernel_keys"] == 1 and books["kernel_logged"] == 0, books
    assert books["counted"] == books["kernel_new_flows"] == books["recorded"] == 300, books
    assert books["balanced"], books


def test_a_full_counting_set_logs_the_rest_one_by_one_and_loses_no_count(
        topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nft_learn, "COUNT_SIZE", 2)
    topology.add_addresses(API)
    ports = [1000, 1001, 1002, 1003, 1000, 1001, 1002, 1003, 1004]  # udp: a flow each
    books, counts = run(topology, [("udp", ports)])
    assert counts == {(1000, "udp"): 2, (1001, "udp"): 2, (1002, "udp"): 2, (1003, "udp"): 2,
                      (1004, "udp"): 1}
    # two keys fit: their 4 flows counted in the kernel, the other 5 logged one by one
    assert (books["counted"], books["kernel_logged"], books["kernel_keys"]) == (4, 5, 2), books
    assert books["kernel_new_flows"] == books["recorded"] == 9 and books["balanced"], books
