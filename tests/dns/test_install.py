"""`outguard dns install/uninstall` in a temporary root: reversible for each target."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.dns.install import InstallError, install, uninstall


def test_resolv_conf_round_trip(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    original = "nameserver 198.51.100.1\nsearch example.test\n"
    (tmp_path / "etc/resolv.conf").write_text(original)
    done = install(("127.0.0.1", 53), root=tmp_path)
    assert done.target == "resolv.conf"
    assert "nameserver 127.0.0.1" in (tmp_path / "etc/resolv.conf").read_text()
    install(("127.0.0.1", 53), root=tmp_path)  # twice: the saved original is kept
    uninstall(root=tmp_path)
    assert (tmp_path / "etc/resolv.conf").read_text() == original
    assert uninstall(root=tmp_path) == []


def test_systemd_resolved_drop_in(tmp_path: Path) -> None:
    (tmp_path / "run/systemd/resolve").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "etc/resolv.conf").symlink_to(tmp_path / "run/systemd/resolve/stub-resolv.conf")
    done = install(("127.0.0.1", 5353), root=tmp_path)
    assert done.target == "systemd-resolved"
    assert "DNS=127.0.0.1:5353" in done.path.read_text()
    assert uninstall(root=tmp_path) == [done.path]
    assert (tmp_path / "etc/resolv.conf").is_symlink()


def test_netns_and_port_check(tmp_path: Path) -> None:
    done = install(("127.0.0.1", 53), root=tmp_path, netns="ogt-1")
    assert done.path == tmp_path / "etc/netns/ogt-1/resolv.conf"
    assert uninstall(root=tmp_path, netns="ogt-1") == [done.path]
    (tmp_path / "etc").mkdir(exist_ok=True)
    with pytest.raises(InstallError, match="port 5353"):
        install(("127.0.0.1", 5353), root=tmp_path)
