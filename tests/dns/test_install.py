"""`outguard dns install/uninstall` in a temporary root: reversible for each target, and no
way out of /etc/netns or into resolv.conf's other lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.dns.install import Change, InstallError, install, uninstall


def test_resolv_conf_round_trip(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    original = "nameserver 198.51.100.1\nsearch example.test\n"
    (tmp_path / "etc/resolv.conf").write_text(original)
    done = install(("127.0.0.1", 53), root=tmp_path)
    assert done.target == "resolv.conf" and done.saved == tmp_path / "etc/resolv.conf.outguard-saved"
    assert "nameserver 127.0.0.1" in (tmp_path / "etc/resolv.conf").read_text()
    install(("127.0.0.1", 53), root=tmp_path)  # twice: the saved original is kept
    assert uninstall(root=tmp_path) == [Change("restored", tmp_path / "etc/resolv.conf")]
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
    assert uninstall(root=tmp_path) == [Change("removed", done.path)]
    assert (tmp_path / "etc/resolv.conf").is_symlink()


def test_netns_without_a_previous_file_removes_ours_and_its_directory(tmp_path: Path) -> None:
    done = install(("127.0.0.1", 53), root=tmp_path, netns="ogt-1")
    assert done.path == tmp_path / "etc/netns/ogt-1/resolv.conf" and done.saved is None
    install(("127.0.0.1", 53), root=tmp_path, netns="ogt-1")  # twice: still ours
    assert uninstall(root=tmp_path, netns="ogt-1") == [Change("removed", done.path)]
    assert not (tmp_path / "etc/netns/ogt-1").exists()  # install made it
    (tmp_path / "etc").mkdir(exist_ok=True)
    with pytest.raises(InstallError, match="port 5353"):
        install(("127.0.0.1", 5353), root=tmp_path)
    with pytest.raises(InstallError, match="port 5353"):  # resolv.conf names no port there either
        install(("127.0.0.1", 5353), root=tmp_path, netns="ogt-1")


def test_netns_keeps_and_restores_an_existing_resolv_conf(tmp_path: Path) -> None:
    directory = tmp_path / "etc/netns/web"
    directory.mkdir(parents=True)
    (directory / "hosts").write_text("192.0.2.9 db\n")
    original = "nameserver 192.0.2.53\noptions rotate\n"
    (directory / "resolv.conf").write_text(original)
    done = install(("127.0.0.1", 53), root=tmp_path, netns="web")
    assert done.saved == tmp_path / "etc/netns/web.resolv.conf.outguard-saved"
    assert done.saved.read_text() == original
    # nothing new in the namespace's directory: `ip netns exec` mounts each file there on /etc
    assert sorted(p.name for p in directory.iterdir()) == ["hosts", "resolv.conf"]
    assert uninstall(root=tmp_path, netns="web") == [Change("restored", done.path)]
    assert (directory / "resolv.conf").read_text() == original
    assert sorted(p.name for p in directory.iterdir()) == ["hosts", "resolv.conf"]
    assert uninstall(root=tmp_path, netns="web") == []


def test_a_foreign_file_next_to_a_saved_one_is_not_lost(tmp_path: Path) -> None:
    directory = tmp_path / "etc/netns/web"
    directory.mkdir(parents=True)
    (directory / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    install(("127.0.0.1", 53), root=tmp_path, netns="web")
    (directory / "resolv.conf").write_text("nameserver 192.0.2.54\n")  # rewritten by someone
    with pytest.raises(InstallError, match="exists already"):
        install(("127.0.0.1", 53), root=tmp_path, netns="web")
    assert (directory / "resolv.conf").read_text() == "nameserver 192.0.2.54\n"


def test_install_writes_through_no_symlink(tmp_path: Path) -> None:
    directory = tmp_path / "etc/netns/web"
    directory.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (directory / "resolv.conf").symlink_to(victim)
    install(("127.0.0.1", 53), root=tmp_path, netns="web")
    assert victim.read_text() == "keep me\n"
    uninstall(root=tmp_path, netns="web")
    assert (directory / "resolv.conf").is_symlink() and victim.read_text() == "keep me\n"


@pytest.mark.parametrize("name", ["../..", "..", ".", "a/b", "x\ny", "", "a" * 65])
def test_netns_names_cannot_leave_etc_netns(tmp_path: Path, name: str) -> None:
    with pytest.raises(InstallError, match="invalid network namespace name"):
        install(("127.0.0.1", 53), root=tmp_path, netns=name)
    with pytest.raises(InstallError, match="invalid network namespace name"):
        uninstall(root=tmp_path, netns=name)
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("addr", ["fe80::1%x\nnameserver 203.0.113.1", "fe80::1%eth0",
                                  "::ffff:127.0.0.1", "0.0.0.0", "::", "127.0.0.1\nx"])
def test_addresses_that_cannot_go_into_resolv_conf(tmp_path: Path, addr: str) -> None:
    (tmp_path / "etc").mkdir()
    with pytest.raises(InstallError):
        install((addr, 53), root=tmp_path)
    assert not (tmp_path / "etc/resolv.conf").exists()
