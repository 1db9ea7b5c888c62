"""`outguard doctor`'s verdicts: each check's ok / warn / fail from the facts the probes found."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.kernel.hostprobe import Listener
from outguard.service import doctor


@pytest.mark.parametrize(("version", "lib", "level"), [
    ("1.0.6", None, "ok"), ("1.1.1", None, "ok"), ("0.9.8", None, "warn"), (None, None, "warn"),
    ("1.0.6", "cannot load libnftables.so.1", "fail"),
])
def test_nftables(version: str | None, lib: str | None, level: str) -> None:
    assert doctor.nftables(version, lib).level == level


@pytest.mark.parametrize(("state", "level"), [("loaded", "ok"), ("builtin", "ok"),
                                              ("module", "ok"), ("missing", "fail")])
def test_nflog(state: str, level: str) -> None:
    assert doctor.nflog(state).level == level


@pytest.mark.parametrize(("mount", "level"), [
    ("/sys/fs/cgroup", "ok"), ("/sys/fs/cgroup/unified", "ok"), ("/proc/self/fd/5", "ok"),
    (None, "warn")])
def test_cgroup2(mount: str | None, level: str) -> None:
    assert doctor.cgroup2(mount).level == level


@pytest.mark.parametrize(("mode", "uid", "level", "hint"), [
    (0o40700, 0, "ok", ""), (0o40750, 0, "warn", "chmod 700"), (0o40755, 0, "warn", "chmod 700"),
    (0o40770, 0, "fail", "chmod 700"), (0o40777, 0, "fail", "chmod 700"),
    (0o40700, 1000, "fail", "chown root"), (None, None, "warn", "outguard apply"),
])
def test_state_dir(mode: int | None, uid: int | None, level: str, hint: str) -> None:
    check = doctor.state_dir(Path("/var/lib/outguard"), mode, uid)
    assert check.level == level and hint in check.hint


AGENT = Listener("udp", "127.0.0.1", 41, ("/usr/lib/outguard/bin/python3", "-m",
                                          "outguard.dns.process"))
OTHER = Listener("udp", "127.0.0.1", 42, ("/usr/sbin/dnsmasq", "-k"))


@pytest.mark.parametrize(("listen", "found", "running", "level", "words"), [
    (None, [], None, "ok", "no resolver"),
    ("127.0.0.1:53", [AGENT], True, "ok", "served by outguard (pid 41)"),
    ("127.0.0.1:53", [], True, "warn", "free"),
    ("127.0.0.1:53", [], None, "warn", "free"),
    ("127.0.0.1:53", [OTHER], None, "fail", "/usr/sbin/dnsmasq -k (pid 42"),
    ("127.0.0.1:53", [AGENT, OTHER], True, "fail", "dnsmasq"),
    ("127.0.0.1:53", [Listener("tcp", "0.0.0.0", None, ())], None, "fail", "process not found"),
])
def test_port(listen: str | None, found: list[Listener], running: bool | None, level: str,
              words: str) -> None:
    check = doctor.port("resolver", listen, found, running)
    assert check.level == level and words in check.message, check


def test_unit() -> None:
    assert [c.level for c in doctor.unit("active", "enabled", "enabled")] == ["ok", "ok"]
    failed = doctor.unit("failed", "enabled", "disabled")
    assert [c.level for c in failed] == ["fail", "warn"]
    assert "journalctl -u outguard.service" in failed[0].hint
    assert "systemctl enable outguard-restore.service" in failed[1].hint
    inactive = doctor.unit("inactive", "disabled", "enabled")[0]
    assert inactive.level == "warn" and inactive.hint == "systemctl enable --now outguard.service"


def test_a_line_says_what_to_do() -> None:
    line = doctor.state_dir(Path("/x"), 0o40777, 0).line()
    assert line == "fail  state dir: /x is 0777: others can write what is restored at boot" \
                   " -> chmod 700 /x"


def test_a_damaged_snapshot_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "applied").mkdir()
    (tmp_path / "applied" / "state.json").write_text("{broken")
    tmp_path.chmod(0o700)
    checks = doctor.run_checks(tmp_path, systemd=lambda: False)
    bad = [c for c in checks if "cannot be read" in c.message]
    assert len(bad) == 1 and bad[0].level == "fail", checks


@pytest.mark.parametrize(("text", "expected"), [
    (None, []), ("version: 1\n", []), ("- a list\n", []), ("version: [1\n", []),
    ("proxy: {}\n", ["127.0.0.1:3128", "[::1]:3128"]),
    ("proxy:\n  listen: 127.0.0.1:8080\n", ["127.0.0.1:8080"]),
    ("proxy:\n  listen: ['127.0.0.1:8080', '[::1]:8081']\n", ["127.0.0.1:8080", "[::1]:8081"]),
])
def test_proxy_listens(text: str | None, expected: list[str]) -> None:
    assert doctor.proxy_listens(text) == expected
