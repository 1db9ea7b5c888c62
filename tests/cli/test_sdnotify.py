"""sd_notify: what systemd's `Type=notify` unit of the agent receives."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from outguard.cli.sdnotify import notify


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
