#!/usr/bin/env python3
"""Fleet agents: push-to-applied latency on every host, and how fast the outboxes drain after
an outage — real `outguard run --fleet` agents in network namespaces against w20a's real
`outguard fleet serve` and a private PostgreSQL (tests/fleet/agentlab.py builds it all).

    sudo .venv/bin/python bench/fleet_agents.py [--hosts 10] [--rounds 5] [--burst 100]

Issue target: push-to-applied p95 <= 2 s for 10 hosts. A push is `outguard fleet push P --to
'h*' --canary 0 --waves 100% --soak 0` of a new version each round; a host's latency is the
server's own two timestamps: the assignment committed (rollout_hosts.assigned) to the host's
`applied` report stored (rollout_hosts.reported). In between, the server wakes the host's
long-poll, the agent applies with a confirmation window (the detached rollback watchdog),
verifies in the kernel, reports over a new connection (the confirmation) and confirms. Peer,
measured in the same run: the same policy applied by `outguard apply --verify
--confirm-timeout 60` + `outguard confirm` in a spare namespace — the local floor of that
work with no fleet at all (two processes' start included, as an operator would pay it).

Drain: the server is stopped, every host gets `--burst` blocked UDP datagrams to distinct
destinations (as many incidents), the server is started again; the figure is the time from its
start to every outbox empty, and the rows in PostgreSQL are counted (exactly once per host).
Holds flock /tmp/og-bench.lock while timing. Not a test.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import subprocess
import sys
import time

import benchlib as bl

sys.path.insert(0, str(bl.REPO_DIR))
sys.path.insert(0, str(bl.REPO_DIR / "src"))

from tests.fleet.agentlab import AgentLab, Host, policy_text


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def push_round(lab: AgentLab, agents: list[Host], n: int) -> list[float]:
    path = lab.root / f"bench{n}.yaml"
    path.write_text(policy_text(f"bench round {n}"))
    lab.fleet_cli("push", str(path), "--to", "h*", "--canary", "0", "--waves", "100%", "--soak",
                  "0")
    rid = lab.sql("SELECT max(id) FROM rollouts")[0][0]
    lab.wait(f"round {n} applied", lambda: lab.sql(
        "SELECT count(*) FROM rollout_hosts WHERE rollout_id = %s AND result = 'applied'",
        rid)[0][0] == len(agents), 120, 0.05)
    lab.wait(f"rollout {rid} done", lambda: lab.sql(
        "SELECT state FROM rollouts WHERE id = %s", rid) == [("done",)], 30)
    rows = lab.sql("SELECT extract(epoch FROM reported - assigned) FROM rollout_hosts"
                   " WHERE rollout_id = %s", rid)
    return [float(r[0]) for r in rows]


def peer_apply(lab: AgentLab, peer: Host, n: int) -> float:
    """`apply --verify --confirm-timeout` + `confirm` of the same policy, in a spare host
    namespace (on the bridge like the others, no agent)."""
    path = lab.root / f"peer{n}.yaml"
    path.write_text(policy_text(f"peer round {n}"))
    state = lab.root / "peer-state"
    base = [sys.executable, "-m", "outguard"]
    where = ["--netns", peer.netns, "--state-dir", str(state)]
    t0 = time.perf_counter()
    subprocess.run([*base, "apply", str(path), "--verify", "--confirm-timeout", "60", *where],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*base, "confirm", *where], check=True, capture_output=True, timeout=60)
    return time.perf_counter() - t0


def drain(lab: AgentLab, agents: list[Host], burst: int, first: int) -> dict[str, object]:
    before = {h.name: len(h.local_incident_ids()) for h in agents}
    lab.stop_server()
    for h in agents:
        lab.burst(h, first, burst)
    lab.wait("the burst in every outbox", lambda: all(
        h.outbox_books()["incidents"]["pending"] >= burst for h in agents), 60, 0.1)
    t0 = time.monotonic()
    lab.start_server()
    started = time.monotonic() - t0
    lab.wait("every outbox drained", lambda: all(
        h.outbox_books()["incidents"]["pending"] == 0 for h in agents), 180, 0.05)
    took = time.monotonic() - t0
    rows = dict(lab.sql("SELECT h.name, count(*) FROM incidents i JOIN hosts h"
                        " ON h.id = i.host_id GROUP BY h.name"))
    local = {h.name: len(h.local_incident_ids()) for h in agents}
    return {"hosts": len(agents), "incidents_per_host": burst,
            "server_start_s": round(started, 2), "drain_s_from_server_start": round(took, 2),
            "exactly_once": all(rows.get(n) == local[n] for n in local),
            "new_local": {n: local[n] - before[n] for n in local}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burst", type=int, default=100)
    args = ap.parse_args()
    bl.require_root()
    lab = AgentLab(args.hosts + 1).build()  # the last: the peer's namespace, no agent
    agents, spare = lab.hosts[:-1], lab.hosts[-1]
    try:
        p0 = lab.root / "p0.yaml"
        p0.write_text(policy_text("p0"))
        for h in agents:
            lab.start_agent(h, p0)
        lab.wait("every host enrolled", lambda: lab.sql("SELECT count(*) FROM hosts")[0][0]
                 == args.hosts, 120)
        lab.wait("every agent following", lambda: all(
            (h.state / "fleet" / "follow.json").exists() for h in agents), 60)
        with open("/tmp/og-bench.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fleet: list[float] = []
            peer: list[float] = []
            for n in range(args.rounds):
                got = push_round(lab, agents, n)
                fleet += got
                peer.append(peer_apply(lab, spare, n))
                bl.log(f"round {n}: fleet p50 {statistics.median(got):.2f} s max"
                       f" {max(got):.2f} s; peer {peer[-1]:.2f} s")
            drained = drain(lab, agents, args.burst, 10_000)
        out = {"bench": "fleet_agents", "hosts": args.hosts, "rounds": args.rounds,
               "push_to_applied_s": {"p50": round(pct(fleet, 0.5), 3),
                                     "p95": round(pct(fleet, 0.95), 3),
                                     "max": round(max(fleet), 3), "n": len(fleet)},
               "peer_local_apply_verify_confirm_s": {"median": round(statistics.median(peer), 3)},
               "ratio_p50_to_peer": round(pct(fleet, 0.5) / statistics.median(peer), 2),
               "target_p95_le_2s": pct(fleet, 0.95) <= 2.0, "drain": drained}
        print(f"push-to-applied over {len(fleet)} host-pushes: p50 {pct(fleet, 0.5):.2f} s,"
              f" p95 {pct(fleet, 0.95):.2f} s, max {max(fleet):.2f} s"
              f" (target p95 <= 2 s: {'met' if out['target_p95_le_2s'] else 'MISSED'})")
        print(f"peer (local apply --verify + confirm, same policy): median"
              f" {statistics.median(peer):.2f} s; fleet p50 / peer {out['ratio_p50_to_peer']}")
        print(f"drain after a server outage: {args.burst} incidents on each of {args.hosts}"
              f" hosts in {drained['drain_s_from_server_start']} s from the server's start"
              f" (exactly once: {drained['exactly_once']})")
        print(json.dumps(out))
    finally:
        lab.close()


if __name__ == "__main__":
    main()
