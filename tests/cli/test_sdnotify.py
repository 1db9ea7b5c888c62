"""sd_notify: what systemd's `Type=notify` unit of the agent receives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import pytest

from outguard.cli.sdnotify import Watchdog, notify, watchdog_interval


def test_fields_reach_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notify("READY=1", "STATUS=serving policy 3f2a")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving policy 3f2a"


def test_without_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notify("READY=1")  # a socket that is not there: never fails the agent


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None,
                                                     ) -> None:
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert watchdog_interval(env) == expected


def test_the_watchdog_pings_from_the_loop_until_stopped(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))

        async def main() -> None:
            dog = Watchdog(asyncio.get_running_loop(), 0.05)
            dog.start()
            await asyncio.sleep(0.3)
            dog.stop()
        asyncio.run(main())
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(sock.recv(64))
        assert set(got) == {b"WATCHDOG=1"} and 3 <= len(got) <= 8, got
