"""The fleet outbox: bound and drop counts, FIFO order, batches, updates in place, books that
balance, and durability across a killed process (a real SIGKILL of a real writer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from outguard.fleet.outbox import Outbox, OutboxError, read_books


def items(ids: range, prefix: str = "i") -> list[tuple[str, float, dict[str, object]]]:
    return [(f"{prefix}{n}", float(n), {"n": n}) for n in ids]


def test_fifo_batches_and_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("incidents", items(range(10)))
    first = box.take("incidents", 4)
    assert [i.id for i in first] == ["i0", "i1", "i2", "i3"]
    assert box.take("incidents", 4) == first  # not gone until acked
    assert box.ack("incidents", [i.seq for i in first]) == 4
    assert [i.id for i in box.take("incidents", 100)] == [f"i{n}" for n in range(4, 10)]
    assert box.ack("incidents", [first[0].seq]) == 0  # acked twice counts once
    b = box.books("incidents")
    assert (b.enqueued, b.sent, b.pending, b.dropped) == (10, 4, 6, 0) and b.balanced
    assert box.take("flows", 10) == []  # kinds apart
    assert box.pending_counted("incidents") == 6


def test_bound_drops_new_items_and_counts_them(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", bound=5)
    assert box.put("incidents", items(range(3))) == 0
    assert box.put("incidents", items(range(3, 9))) == 4  # 2 fit
    kept = box.take("incidents", 100)
    assert [i.id for i in kept] == ["i0", "i1", "i2", "i3", "i4"]  # nothing lost below the bound
    box.ack("incidents", [kept[0].seq, kept[1].seq])
    assert box.put("incidents", items(range(9, 12))) == 1
    b = box.books("incidents")
    assert (b.enqueued, b.sent, b.pending, b.dropped) == (12, 2, 5, 5) and b.balanced
    assert box.pending_counted("incidents") == b.pending


def test_an_incident_that_grows_is_sent_again_and_a_late_ack_keeps_the_newer_copy(
        tmp_path: Path) -> None:
    # a newcomer's trial: an incident of count 8 on the host was 1 in the fleet for good
    box = Outbox(tmp_path / "o.db")
    box.put("incidents", [("a", 1.0, {"count": 1}), ("b", 2.0, {"count": 1})])
    box.put("incidents", [("a", 1.0, {"count": 7})])
    got = box.take("incidents", 10)
    assert [(i.id, i.record["count"]) for i in got] == [("b", 1), ("a", 7)]
    box.ack("incidents", [i.seq for i in got])
    box.put("incidents", [("a", 1.0, {"count": 9})])  # sent, and grown: it goes again
    again = box.take("incidents", 10)
    assert [(i.id, i.record["count"]) for i in again] == [("a", 9)]
    box.put("incidents", [("a", 1.0, {"count": 12})])  # grows while that copy is in flight
    box.ack("incidents", [again[0].seq])  # the ack of count 9 does not settle count 12
    assert [(i.id, i.record["count"]) for i in box.take("incidents", 10)] == [("a", 12)]
    b = box.books("incidents")
    assert (b.enqueued, b.sent, b.pending) == (3, 2, 1) and b.balanced


def test_reject_counts_and_never_sends_again(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("flows", items(range(3)))
    box.reject("flows", [box.take("flows", 1)[0].seq])
    assert [i.id for i in box.take("flows", 10)] == ["i1", "i2"]
    b = box.books("flows")
    assert (b.rejected, b.pending) == (1, 2) and b.balanced


def test_sent_ids_are_forgotten_beyond_keep_sent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", keep_sent=10)
    box.put("incidents", items(range(1200)))
    box.ack("incidents", [i.seq for i in box.take("incidents", 1200)])
    rows = box._db.execute("SELECT count(*) FROM items").fetchone()[0]
    assert rows == 10
    assert box.books("incidents").balanced


def test_concurrent_put_and_drain_balance(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", bound=300)
    done = threading.Event()

    def writer() -> None:
        for n in range(50):
            box.put("incidents", items(range(n * 20, n * 20 + 20)))
        done.set()

    got: list[str] = []
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set() or box.take("incidents", 1):
        batch = box.take("incidents", 37)
        got += [i.id for i in batch]
        box.ack("incidents", [i.seq for i in batch])
    thread.join()
    b = box.books("incidents")
    assert b.enqueued == 1000 and b.balanced and b.pending == 0
    assert len(got) == len(set(got)) == b.sent
    # what arrived came in the order it was queued
    assert got == sorted(got, key=lambda s: int(s[1:]))


def test_read_books_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet" / "o.db"
    assert read_books(path) is None
    box = Outbox(path)
    box.put("incidents", items(range(2)))
    assert (path.stat().st_mode & 0o777) == 0o600
    books = read_books(path)
    assert books is not None and books["incidents"].pending == 2 and books["flows"].enqueued == 0
    box.close()


def test_unwritable_file_is_an_outbox_error(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("x")
    with pytest.raises(OutboxError, match="fleet outbox"):
        Outbox(bad / "o.db")


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from outguard.fleet.outbox import Outbox
    box = Outbox(Path(sys.argv[1]))
    n = 0
    while True:
        box.put("incidents", [(f"k{n}-{j}", float(n), {"n": n}) for j in range(5)])
        print(n, flush=True)  # printed after the commit returned: this put is durable
        n += 1
""")


def test_nothing_committed_is_lost_when_the_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    committed = -1
    deadline = time.monotonic() + 30
    while committed < 40 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through a later put, most likely
    proc.wait()
    assert committed >= 40
    box = Outbox(path)
    ids = {i.id for i in box.take("incidents", 100_000)}
    assert {f"k{n}-{j}" for n in range(committed + 1) for j in range(5)} <= ids
    b = box.books("incidents")
    assert b.balanced and b.pending == len(ids) == box.pending_counted("incidents")
    assert len(ids) % 5 == 0  # a put is whole or not at all


def test_put_without_replace_keeps_the_first_record(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("flows", [("f", 1.0, {"count": 1})], replace=False)
    box.put("flows", [("f", 1.0, {"count": 4})], replace=False)  # a delta: not the flow
    (item,) = box.take("flows", 10)
    assert item.record == {"count": 1} and box.books("flows").enqueued == 1
