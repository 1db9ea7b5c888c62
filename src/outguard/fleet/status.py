"""The fleet agent's figures: its part of `outguard status` (the outbox's books and the
policy it follows) and its Prometheus families.

Place in the data flow: `read` takes what the running (or stopped) agent keeps in
STATE_DIR/fleet — the outbox (`fleet.outbox.read_books`, read-only) and follow.json
(`fleet.follow`) — and nothing else; `cli.status_cmd` prints `lines` and puts `read` into
`--json`. `families` is watched by the agent's metrics endpoint (`service.fleetpart`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from outguard.fleet import follow as fl
from outguard.fleet.agent import FOLLOW, OUTBOX, FleetAgent
from outguard.fleet.client import CREDENTIAL, FleetError, load_credential
from outguard.fleet.outbox import KINDS, read_books


def read(state_dir: Path) -> dict[str, Any] | None:
    """None when this state directory has never been used with --fleet."""
    if not (state_dir / "fleet").is_dir():
        return None
    out: dict[str, Any] = {}
    try:
        cred = load_credential(state_dir)
        out["enrolled"] = None if cred is None else {"url": cred.url, "host": cred.host,
                                                     "host_id": cred.host_id}
    except FleetError as exc:
        out["enrolled"] = {"error": str(exc)}
    try:
        out["follow"] = dataclasses.asdict(fl.load((state_dir / FOLLOW).read_text()))
    except (OSError, ValueError, TypeError):
        out["follow"] = None
    books = read_books(state_dir / OUTBOX)
    out["outbox"] = None if books is None else {k: b.to_json() for k, b in books.items()}
    return out


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lines(doc: dict[str, Any] | None) -> list[str]:
    if doc is None:
        return []
    enrolled = doc.get("enrolled")
    out = ["fleet: " + (f"enrolled with {enrolled['url']} as {enrolled['host']} (host id"
                        f" {enrolled['host_id']})" if enrolled and "url" in enrolled
                        else enrolled["error"] if enrolled
                        else f"not enrolled (no {CREDENTIAL})")]
    f = doc.get("follow")
    if f:
        until = f["lockdown_until"]
        # an ended lockdown is the kernel's doing (meta time): the record is not cleared then
        lock = (f"; fleet lockdown until {_when(until)}" if until and until > time.time()
                else "")
        out.append(f"  policy version in force: {f['version'] if f['version'] is not None else 'none'};"
                   f" last tried {f['tried']}: {f['result']}"
                   f"{'' if f['reported'] else ' (not reported yet)'}{lock}")
    for kind, b in (doc.get("outbox") or {}).items():
        out.append(f"  outbox {kind}: {b['enqueued']} enqueued = {b['sent']} sent +"
                   f" {b['pending']} pending + {b['dropped']} dropped (full) + {b['rejected']}"
                   f" rejected" + ("" if b["balanced"] else "  <-- BOOKS DO NOT BALANCE")
                   + ("  <-- DROPPED" if b["dropped"] else ""))
    return out


def families(agent: FleetAgent) -> Callable[[], Iterator[Metric]]:
    """Prometheus families: the outbox's books per kind, the senders, the server's state."""
    def collect() -> Iterator[Metric]:
        names = ("enqueued", "sent", "dropped", "rejected")
        counters = {n: CounterMetricFamily(f"outguard_fleet_outbox_{n}", f"Outbox items {n}"
                                           " (enqueued = sent + pending + dropped + rejected)",
                                           labels=["kind"]) for n in names}
        pending = GaugeMetricFamily("outguard_fleet_outbox_pending", "Outbox items waiting"
                                    " for the fleet server", labels=["kind"])
        for kind in KINDS:
            books = agent.outbox.books(kind)
            for n in names:
                counters[n].add_metric([kind], getattr(books, n))
            pending.add_metric([kind], books.pending)
        failures = CounterMetricFamily("outguard_fleet_post_failures", "Batch posts that did"
                                       " not go through (retried)", labels=["kind"])
        for sender in agent.senders:
            failures.add_metric([sender.kind], sender.stats.failures)
        up = GaugeMetricFamily("outguard_fleet_server_reachable", "1 if the last request to"
                               " the fleet server got an answer")
        up.add_metric([], 1.0 if agent.reachable else 0.0)
        version = GaugeMetricFamily("outguard_fleet_policy_version", "The fleet policy version"
                                    " in force (-1: none)")
        version.add_metric([], float(agent.state.version if agent.state.version is not None
                                     else -1))
        yield from (*counters.values(), pending, failures, up, version)
    return collect
