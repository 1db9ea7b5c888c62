"""A `file:` feed is read only when it is a regular file within its size limit.

A FIFO hung `apply` (open() waits for a writer), /dev/zero was read up to the 64 MB limit (and
`feeds check` read it with no limit at all), and a file that is not a list had its lines
echoed in the errors.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.feeds.local import read_bounded, read_file
from outguard.feeds.policy import FEEDS
from outguard.feeds.spec import FeedSpec
from outguard.policy import load

# a policy's `@feed:` lists load as the pipeline loads them
load_text = partial(load.load_text, feeds=FEEDS)


def _spec(path: Path | str, max_bytes: int = 1 << 20) -> FeedSpec:
    return FeedSpec(name="t", file=str(path), format="plain", category="test", max_bytes=max_bytes)


def _within(seconds: float, fn: object) -> object:
    """fn() in a thread; fails (instead of hanging the suite) when it blocks."""
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)  # type: ignore[operator]
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the read blocked"
    return out[0]


def test_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_bytes(b"198.51.100.1\n")
    got = read_file(_spec(tmp_path / "l.txt"))
    assert (got.status, got.body) == ("ok", b"198.51.100.1\n")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    got = _within(10, lambda: read_file(_spec(fifo)))
    assert got.status == "error" and "FIFO" in (got.error or "")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "device"), ("/dev/null", "device")])
def test_devices_are_refused(path: str, kind: str) -> None:
    got = _within(10, lambda: read_file(_spec(path)))
    assert got.status == "error" and kind in (got.error or "")  # type: ignore[attr-defined]


def test_directory_missing_file_and_nul(tmp_path: Path) -> None:
    assert "directory" in (read_file(_spec(tmp_path)).error or "")
    assert "not a file name" in (read_file(_spec(f"{tmp_path}/a\0b")).error or "")
    missing = read_file(_spec(tmp_path / "nope.txt"))
    assert missing.status == "error" and "No such file" in (missing.error or "")


def test_size_limit_from_the_size_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"198.51.100.1\n" * 200)
    body, why = read_bounded(str(big), 1024)
    assert body is None and "larger than the 1024 byte limit" in (why or "")
    assert read_bounded(str(big), 200 * 13)[0] is not None


POLICY = """version: 1
deny:
  - name: threat-intel
    to: ["@feed:local-bad"]
feeds:
  local-bad: {{file: "{file}", format: plain}}
"""


def test_policy_with_a_fifo_feed_fails_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "bad.fifo"
    os.mkfifo(fifo)

    def load() -> str:
        with pytest.raises(PolicyError) as err:
            load_text(POLICY.format(file=fifo), str(tmp_path / "p.yaml"), base_dir=tmp_path)
        return str(err.value.problems[0])

    message = _within(10, load)
    assert "deny[0].to[0]" in message and "FIFO" in message  # type: ignore[operator]


def test_a_file_that_is_no_list_is_never_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("".join(f"user{i}:$6$s3cr3tHASH{i}$abcdef:19000:0:99999:7:::\n"
                              for i in range(30)))
    with pytest.raises(PolicyError) as err:
        load_text(POLICY.format(file=secret), str(tmp_path / "p.yaml"), base_dir=tmp_path)
    text = "\n".join(str(p) for p in err.value.problems)
    assert "not plain entries" in text and "s3cr3t" not in text and "user1" not in text
