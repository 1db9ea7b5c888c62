"""The sender against a real (tiny) Starlette/uvicorn server over HTTP/1.1: batches, an outage,
a lost answer (at-least-once sending, exactly-once rows), 429, an item the server refuses, a
bad credential; the backoff's jitter; TLS verified against --fleet-ca."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.fleet.client import Credential, FleetClient, UnreachableError
from outguard.fleet.outbox import Outbox
from outguard.fleet.sender import Sender, backoff
from tests.fleet.tinyserver import Tiny


@pytest.fixture
def tiny() -> Iterator[Tiny]:
    with Tiny() as server:
        yield server


def fill(box: Outbox, n: int, kind: str = "incidents") -> None:
    box.put(kind, [(f"id{k}", 1e9 + k, {"n": k, "dst": "203.0.113.9"}) for k in range(n)])


async def drain(url: str, box: Outbox, kind: str = "incidents", *, timeout: float = 20,
                cred: str = "cred-1", **kw: object) -> Sender:
    client = FleetClient(url, None, Credential(url, "h", 1, cred))
    try:
        sender = Sender(box, kind, client.post_items, base=0.05, cap=0.4,
                        rng=random.Random(1), **kw)  # type: ignore[arg-type]
        await sender.drain(timeout)
        return sender
    finally:
        await client.close()


def test_batches_arrive_once_in_order(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 1200)
    fill(box, 30, "flows")
    sender = asyncio.run(drain(tiny.url, box, batch=500))
    asyncio.run(drain(tiny.url, box, "flows"))
    assert [p[1] for p in tiny.posts if p[0] == "incidents"] == [500, 500, 200]
    assert list(tiny.rows["incidents"]) == [f"id{k}" for k in range(1200)]
    assert len(tiny.rows["flows"]) == 30
    assert sender.stats.accepted == 1200 and sender.stats.duplicates == 0
    b = box.books("incidents")
    assert (b.sent, b.pending) == (1200, 0) and b.balanced


def test_outage_then_recovery_loses_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 300)
    server = Tiny()
    url = server.url  # nothing listens there yet: connection refused

    async def scenario() -> Sender:
        client = FleetClient(url, None, Credential(url, "h", 1, "cred-1"))
        sender = Sender(box, "incidents", client.post_items, batch=100, base=0.05, cap=0.3,
                        rng=random.Random(2))
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(sender.run(stop))
        await asyncio.sleep(1.0)  # the server is away: failures, backoff
        assert sender.stats.failures >= 3 and sender.stats.posts == 0
        server.b.fail_next = 2  # when it is back, its database is away for two posts
        await asyncio.to_thread(server.start)
        for _ in range(200):
            if box.books("incidents").pending == 0:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await client.close()
        return sender

    try:
        sender = asyncio.run(scenario())
    finally:
        server.stop()
    assert len(server.rows["incidents"]) == 300
    assert [p[2] for p in server.posts][:2] == [503, 503]
    assert sender.stats.attempt == 0 and sender.stats.last_error is None
    assert box.books("incidents").balanced and box.books("incidents").sent == 300


def test_lost_answer_is_sent_again_and_counted_duplicate(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 250)
    tiny.b.lose_answer_next = 1  # the first batch is committed, its answer lost
    sender = asyncio.run(drain(tiny.url, box, batch=100))
    assert len(tiny.rows["incidents"]) == 250  # exactly once
    # the server had the first 100 (its answer was lost): they come back as duplicates
    assert sender.stats.duplicates == 100 and sender.stats.accepted == 150
    assert box.books("incidents").sent == 250


def test_throttled_waits_retry_after(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 10)
    tiny.b.throttle_next, tiny.b.throttle_s = 1, 0.5

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await drain(tiny.url, box)
        return loop.time() - t0

    assert asyncio.run(timed()) >= 0.5
    assert [p[2] for p in tiny.posts] == [429, 200]


def test_refused_item_is_isolated_and_rejected(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 40)
    tiny.b.refuse_ids = {"id17"}
    asyncio.run(drain(tiny.url, box, batch=16))
    assert set(tiny.rows["incidents"]) == {f"id{k}" for k in range(40)} - {"id17"}
    b = box.books("incidents")
    assert (b.sent, b.rejected, b.pending) == (39, 1, 0) and b.balanced


def test_bad_credential_keeps_everything_and_alerts_once(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 5)
    troubles: list[str] = []
    sender = asyncio.run(drain(tiny.url, box, cred="wrong", timeout=1.0,
                               on_trouble=troubles.append))
    assert box.books("incidents").pending == 5 and not tiny.rows["incidents"]
    assert sender.stats.failures >= 2 and len(troubles) == 1 and "401" in troubles[0]


def test_backoff_is_full_jitter_capped() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        top = min(10.0, 0.25 * 2 ** attempt)
        got = [backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= g <= top for g in got)
        assert max(got) > top * 0.8  # spread over the whole range, not a fixed delay
        assert min(got) < top * 0.2
    assert backoff(10_000, rng) <= 10.0


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    key, crt = tmp_path / "key.pem", tmp_path / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


def test_tls_verified_against_fleet_ca(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    crt, key = cert
    box = Outbox(tmp_path / "o.db")
    fill(box, 3)
    with Tiny(certfile=crt, keyfile=key) as server:
        assert server.url.startswith("https://")

        async def with_ca(ca: Path | None) -> None:
            client = FleetClient(server.url, ca, Credential(server.url, "h", 1, "cred-1"))
            try:
                await client.post_items("incidents", [])
            finally:
                await client.close()

        with pytest.raises(UnreachableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            asyncio.run(with_ca(None))  # the system's CAs do not know it
        asyncio.run(with_ca(crt))
        client_box = asyncio.run(_drain_ca(server.url, box, crt))
    assert client_box == 3 and len(server.rows["incidents"]) == 3


async def _drain_ca(url: str, box: Outbox, ca: Path) -> int:
    client = FleetClient(url, ca, Credential(url, "h", 1, "cred-1"))
    try:
        await Sender(box, "incidents", client.post_items).drain(10)
    finally:
        await client.close()
    return box.books("incidents").sent


def test_an_outbox_error_does_not_end_the_sender(tiny: Tiny, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    fill(box, 3)
    box.close()  # every take fails now

    async def scenario() -> Sender:
        client = FleetClient(tiny.url, None, Credential(tiny.url, "h", 1, "cred-1"))
        sender = Sender(box, "incidents", client.post_items, cap=0.05)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        await sender.run(stop)  # returns at the stop, not with the error
        await client.close()
        return sender

    assert asyncio.run(scenario()).stats.outbox_errors >= 3
