"""The fleet agent's loops in-process against the tiny real server, where no kernel is needed
(the server assigns no version, so nothing is applied): enrolment at the first start with the
credential kept, the local alert of a start while the server is away, the heartbeat with the
blocked rate, the outbox drained, and a stop that does not wait for a held long-poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from outguard.fleet.agent import FleetAgent, FleetOptions
from outguard.fleet.client import load_credential
from outguard.fleet.outbox import Outbox
from tests.fleet.tinyserver import Tiny


def test_enrol_offline_alert_heartbeat_outbox_and_a_quick_stop(tmp_path: Path) -> None:
    server = Tiny()  # not listening yet: the agent starts while it is away
    alerts: list[dict[str, Any]] = []
    box = Outbox(tmp_path / "fleet" / "outbox.db")
    box.put("incidents", [("i1", 1.0, {"n": 1}), ("i2", 2.0, {"n": 2})])
    blocked = [0]
    opts = FleetOptions(url=server.url, enroll="tok-1", host="web-1", heartbeat=0.3,
                        long_poll=20, cap=0.3)
    agent = FleetAgent(opts, tmp_path, box, publish=alerts.append, blocked=lambda: blocked[0])

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(agent.run(stop))
        await asyncio.sleep(0.8)
        assert [a["signature"] for a in alerts] == ["fleet-unreachable"]
        assert "no policy (none was ever received)" in alerts[0]["title"]
        await asyncio.to_thread(server.start)
        for _ in range(100):
            if len(server.reports) >= 2 and box.books("incidents").pending == 0:
                break
            blocked[0] += 50
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the agent is in a held long-poll now
        t0 = time.monotonic()
        stop.set()
        await task
        return time.monotonic() - t0

    try:
        took = asyncio.run(scenario())
    finally:
        server.stop()
    assert took < 2.0  # the held long-poll did not hold the stop up
    cred = load_credential(tmp_path)
    assert cred is not None and (cred.host, cred.host_id) == ("web-1", 7)
    assert set(server.rows["incidents"]) == {"i1", "i2"}
    beats = [r for r in server.reports if r["result"] == "running"]
    assert beats and beats[-1]["detail"].startswith("heartbeat")
    assert beats[-1]["blocked_rate"] > 0 and beats[-1]["version"] is None
    assert len(alerts) == 1  # one alert for the outage, not one per attempt
    assert agent.reachable and agent.policy_answers >= 1
