"""Never booting open: `restore`, stale confirmations that resolve themselves, a damaged pending
file, the fail-closed table, and a policy whose names do not resolve (no DNS at boot).

A "reboot" here deletes outguard's table in the server namespace and kills what the apply left
running (its watchdog): what a power loss leaves, with the state directory intact.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outguard.apply import failclosed
from outguard.apply.recovery import FailClosedError
from outguard.apply.run import apply_policy
from outguard.errors import KernelError, OutguardError
from outguard.state import StateDir
from tests.kernel.test_apply_safety import (
    ADDRESSES,
    ONLY_IN_B,
    POLICY_A,
    POLICY_B,
    _alive,
    _hash,
    _table,
    _wait_for,
)
from tests.kernel.topology import Probe, RefusingKernel, Topology

pytestmark = pytest.mark.kernel

DENIED = Probe("198.51.100.7", 443)
ALLOWED = Probe("203.0.113.10", 443)


@pytest.fixture
def with_a(topology: Topology) -> Topology:
    topology.add_addresses(*ADDRESSES)
    proc = topology.cli("apply", str(topology.write_policy(POLICY_A, "a.yaml")))
    assert proc.returncode == 0, proc.stderr
    return topology


def _reboot(topo: Topology) -> None:
    pending = topo.state_dir / "pending.json"
    if pending.exists():
        pid = json.loads(pending.read_text())["watchdog_pid"]
        if pid > 0 and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.passes(DENIED) == [True]  # open: what a boot with no table means


def test_restore_puts_the_last_applied_ruleset_back_from_the_state_dir_alone(
        with_a: Topology) -> None:
    topo = with_a
    content = _table(topo)[1]
    (topo.state_dir.parent / "a.yaml").unlink()  # no policy to load at boot
    _reboot(topo)
    proc = topo.cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"restored policy {_hash(POLICY_A)[:12]}")
    assert _table(topo)[1] == content
    assert topo.passes(DENIED, ALLOWED) == [False, True]
    status = topo.status_cli()
    assert status["applied"] and status["drift"] == [] and status["problems"] == []
    # the record is exact again: the next apply is a delta that refills nothing
    assert topo.apply(POLICY_A).method == "delta"
    assert _table(topo)[1] == content


def test_restore_with_nothing_applied_fails(topology: Topology) -> None:
    proc = topology.cli("restore")
    assert proc.returncode == 1 and "nothing to restore" in proc.stderr


def test_a_power_loss_inside_a_confirmation_window_boots_closed_on_the_confirmed_policy(
        with_a: Topology) -> None:
    """A confirmed, B applied with --confirm-timeout, then power lost: pending.json is left and
    no watchdog runs after the boot. `restore` must not refuse, and must not put back the
    unconfirmed B: A comes back, and status says why."""
    topo = with_a
    content_a = _table(topo)[1]
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "600")
    assert proc.returncode == 0, proc.stderr
    _reboot(topo)
    proc = topo.cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert "never confirmed" in proc.stdout
    assert _table(topo)[1] == content_a
    assert topo.passes(ONLY_IN_B, DENIED, ALLOWED) == [False, False, True]
    status = topo.status_cli()
    assert status["policy_hash"] == _hash(POLICY_A) and status["pending_confirmation"] is None
    assert status["last_rollback"]["by"] == "settle"
    assert status["last_rollback"]["from"] == _hash(POLICY_B)


def test_an_apply_after_an_expired_confirmation_whose_watchdog_died_rolls_it_back_first(
        with_a: Topology) -> None:
    """The watchdog was killed and the deadline passed: every apply refused ("an earlier apply
    still waits") and the unconfirmed policy stayed. Now the next command rolls it back."""
    topo = with_a
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "3")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((topo.state_dir / "pending.json").read_text())
    os.kill(meta["watchdog_pid"], signal.SIGKILL)
    time.sleep(max(0.0, meta["deadline"] - time.time()) + 0.5)
    status = topo.status_cli()
    assert status["pending_confirmation"]["state"] == "expired"
    assert any("expired" in p for p in status["problems"])
    assert topo.cli("status", "--check").returncode == 2
    policy_c = POLICY_A.replace("ports: [443]", "ports: [443, 993]")
    proc = topo.cli("apply", str(topo.write_policy(policy_c, "c.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert "never confirmed" in proc.stderr
    status = topo.status_cli()
    assert status["policy_hash"] == _hash(policy_c) and status["pending_confirmation"] is None
    prev = StateDir(topo.state_dir).snapshot("previous")
    assert prev is not None and prev.policy_hash == _hash(POLICY_A)  # not the unconfirmed B


def test_a_damaged_pending_file_does_not_stop_the_watchdog(with_a: Topology) -> None:
    topo = with_a
    content_a = _table(topo)[1]
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "4")
    assert proc.returncode == 0, proc.stderr
    pending = topo.state_dir / "pending.json"
    watchdog = json.loads(pending.read_text())["watchdog_pid"]
    pending.write_text('{"token": ')
    assert topo.cli("status").returncode == 0  # shows it, does not crash
    _wait_for(lambda: not _alive(watchdog), 30, "the watchdog to roll back and exit")
    assert _table(topo)[1] == content_a
    log = (topo.state_dir / "watchdog.log").read_text()
    assert "watchdog: rolled back" in log and "Traceback" not in log, log
    assert topo.status_cli()["last_rollback"]["by"] == "watchdog"


def test_the_watchdogs_rollback_shows_in_status(with_a: Topology) -> None:
    topo = with_a
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "2")
    assert proc.returncode == 0, proc.stderr
    _wait_for(lambda: topo.status()["pending_confirmation"] is None, 30, "the rollback")
    proc = topo.cli("status")
    assert "rolled back by the watchdog" in proc.stdout, proc.stdout
    assert topo.status_cli()["last_rollback"]["to"] == _hash(POLICY_A)
    proc = topo.cli("confirm")  # too late: nothing waits, and that is an error
    assert proc.returncode == 1 and "nothing waits" in proc.stderr


# --- fail closed ---------------------------------------------------------------------------

# What the kernel refuses: `check` now finds every policy the kernel would refuse (merged
# ports, the kernel dry run of tests/policy/test_kernel_fuzz.py), so a refusal comes from the
# machine (a missing kernel feature, memory): a kernel that refuses the batches carrying this
# policy's rule and is the real one for everything else (the fail-closed table, the last
# applied ruleset).
REFUSED = ("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n"
           "    comment: refused-by-the-test-kernel\n")
BROKEN = "version: 1\nallow:\n  - name: [web\n"


def _apply_refused(topo: Topology, policy: str, name: str = "p.yaml") -> OutguardError:
    """Apply `policy` in this process through RefusingKernel; the error it ends with."""
    with pytest.raises(OutguardError) as err:
        apply_policy(topo.write_policy(policy, name), StateDir(topo.state_dir),
                     RefusingKernel(topo.kernel()))
    return err.value


@pytest.fixture
def resolv_conf(topology: Topology) -> Path:
    """A resolv.conf for the server namespace (`ip netns exec` bind-mounts it)."""
    folder = Path("/etc/netns") / topology.server
    folder.mkdir(parents=True)
    (folder / "resolv.conf").write_text("nameserver 203.0.113.53\nnameserver 127.0.0.53\n")
    topology.add_addresses("203.0.113.53", *ADDRESSES)
    yield folder / "resolv.conf"
    (folder / "resolv.conf").unlink()
    folder.rmdir()


@pytest.mark.parametrize("policy", [REFUSED, BROKEN], ids=["kernel-refuses", "does-not-load"])
def test_a_first_apply_that_fails_leaves_a_fail_closed_table_and_says_so(
        topology: Topology, resolv_conf: Path, policy: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topo = topology
    if policy is REFUSED:
        # in this process /etc/resolv.conf is the host's: the namespace's name servers
        monkeypatch.setattr(failclosed, "resolv_conf_servers", lambda: ["203.0.113.53"])
        err = _apply_refused(topo, policy)
        assert isinstance(err, FailClosedError)
        assert "FAIL-CLOSED" in str(err) and "203.0.113.53" in str(err)
    else:
        proc = topo.cli("apply", str(topo.write_policy(policy)))
        assert proc.returncode == 1
        assert "THE POLICY WAS NOT APPLIED" in proc.stderr and "FAIL-CLOSED" in proc.stderr
        assert "203.0.113.53" in proc.stderr
    assert ("inet", "outguard") in topo.tables()
    assert topo.passes(Probe("203.0.113.53", 53, "udp"), Probe("203.0.113.53", 53),
                       DENIED, ALLOWED, Probe("203.0.113.53", 443)) == [
        True, True, False, False, False]
    status = topo.status_cli()
    assert status["fail_closed"] and status["problems"]
    assert topo.cli("status", "--check").returncode == 2
    # the next good apply replaces it
    assert topo.cli("apply", str(topo.write_policy(POLICY_A, "a.yaml"))).returncode == 0
    assert topo.passes(DENIED, ALLOWED) == [False, True]
    assert topo.status_cli()["fail_closed"] is None


def test_an_audit_policy_that_fails_leaves_no_table(topology: Topology) -> None:
    topo = topology
    err = _apply_refused(topo, REFUSED.replace("version: 1\n", "version: 1\nmode: audit\n"))
    assert not isinstance(err, FailClosedError) and isinstance(err, KernelError)
    assert topo.tables() == []


@pytest.mark.parametrize("policy", [REFUSED, BROKEN], ids=["kernel-refuses", "does-not-load"])
def test_a_failed_apply_at_boot_puts_the_last_applied_ruleset_back(with_a: Topology,
                                                                   policy: str) -> None:
    topo = with_a
    content = _table(topo)[1]
    _reboot(topo)
    if policy is REFUSED:
        err = _apply_refused(topo, policy, "new.yaml")
        assert isinstance(err, FailClosedError) and "last applied" in str(err)
    else:
        proc = topo.cli("apply", str(topo.write_policy(policy, "new.yaml")))
        assert proc.returncode == 1
        assert "THE POLICY WAS NOT APPLIED" in proc.stderr and "last applied" in proc.stderr
    assert _table(topo)[1] == content
    assert topo.passes(DENIED, ALLOWED) == [False, True]


def test_a_failed_reapply_keeps_the_table_and_adds_nothing(with_a: Topology) -> None:
    topo = with_a
    ruleset = topo.ruleset()
    err = _apply_refused(topo, REFUSED, "new.yaml")
    assert not isinstance(err, FailClosedError) and isinstance(err, KernelError)
    assert topo.ruleset() == ruleset


# --- no DNS at boot ----------------------------------------------------------------------


def test_names_that_do_not_resolve_leave_their_rule_empty_and_the_rest_applied(
        with_a: Topology) -> None:
    topo = with_a
    policy = POLICY_A.replace("to: [203.0.113.10, \"2001:db8:10::10\"]",
                              "to: [203.0.113.10, no-such-host.outguard-test.invalid]")
    assert policy != POLICY_A
    path = topo.write_policy(policy, "names.yaml")
    t0 = time.monotonic()
    proc = topo.cli("apply", str(path))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 20
    assert "does not resolve now" in proc.stderr and f"{path}:" in proc.stderr
    assert topo.passes(ALLOWED, DENIED) == [True, False]
    assert "does not resolve now" in " ".join(topo.status_cli()["warnings"])
    # the rule applies only in part: a problem for monitoring (it exited 0)
    proc = topo.cli("status", "--check")
    assert proc.returncode == 2, proc.stdout
    assert "PROBLEM: applies only in part:" in proc.stdout and "no-such-host" in proc.stdout


def test_remove_on_a_host_pointed_at_outguards_resolver_says_how_to_undo_it(
        with_a: Topology) -> None:
    from outguard.dns.install import MARK

    topo = with_a
    folder = Path("/etc/netns") / topo.server
    folder.mkdir(parents=True)
    try:
        (folder / "resolv.conf").write_text(f"{MARK}\nnameserver 127.0.0.1\n")
        proc = topo.cli("remove")
        assert proc.returncode == 0 and proc.stdout.strip() == "removed outguard's table"
        assert f"outguard dns uninstall --netns {topo.server}" in proc.stderr, proc.stderr
        assert f"hint: /etc/netns/{topo.server}/resolv.conf still points" in proc.stderr
    finally:
        (folder / "resolv.conf").unlink()
        folder.rmdir()


def test_remove_with_another_state_dir_leaves_the_table(with_a: Topology, tmp_path: Path) -> None:
    """`remove --state-dir X` deleted the table another state directory applied, and said
    "removed": egress open, the real state directory none the wiser."""
    topo = with_a
    other = tmp_path / "other-state"

    def remove(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "outguard", "remove", "--netns",
                               topo.server, "--state-dir", str(other), *extra],
                              capture_output=True, text=True, timeout=60, check=False)

    proc = remove()
    assert proc.returncode == 1 and "--force" in proc.stderr, proc.stderr
    assert ("inet", "outguard") in topo.tables()
    assert topo.passes(DENIED, ALLOWED) == [False, True]
    proc = remove("--force")
    assert proc.returncode == 0 and proc.stdout.strip() == "removed outguard's table"
    assert topo.tables() == []


def test_after_remove_status_check_says_egress_is_open(with_a: Topology) -> None:
    topo = with_a
    assert topo.cli("status", "--check").returncode == 0
    assert topo.cli("remove").returncode == 0
    proc = topo.cli("status", "--check")
    assert proc.returncode == 2 and "egress is open" in proc.stdout, proc.stdout


# --- feeds in the stored form ------------------------------------------------------------

FEED_POLICY = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10"]
    ports: [443]
deny:
  - name: threats
    to: ["@feed:local-bad", "@feed:quiet"]
feeds:
  local-bad: {file: bad.txt}
  quiet: {file: quiet.txt, may_be_empty: true}
"""
FEED_LISTED = [Probe("198.51.100.7", 443), Probe("198.51.100.70", 443),
               Probe("2001:db8:bad::7", 443)]


@pytest.fixture
def with_feeds(topology: Topology) -> Topology:
    """FEED_POLICY applied: a file feed of IPv4 and IPv6 addresses and networks (its four sets:
    hash and interval, each family, none empty but the IPv6 interval one) and an empty one."""
    topo = topology
    topo.add_addresses(*ADDRESSES, "198.51.100.70")
    (topo.state_dir.parent / "bad.txt").write_text(
        "198.51.100.7\n198.51.100.64/26\n2001:db8:bad::7\n")
    (topo.state_dir.parent / "quiet.txt").write_text("# nothing listed today\n")
    proc = topo.cli("apply", str(topo.write_policy(FEED_POLICY, "feeds.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert topo.passes(*FEED_LISTED, ALLOWED) == [False, False, False, True]
    return topo


def test_restore_of_a_policy_with_feeds_puts_every_feed_set_back(with_feeds: Topology) -> None:
    """`restore` sent `add element` with no elements for a feed's empty set: nft refused the
    whole batch ("Invalid set") and the boot ended with no table at all."""
    topo = with_feeds
    content = _table(topo)[1]
    assert topo.cli("restore").returncode == 0  # over the table that is there
    _reboot(topo)
    proc = topo.cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert _table(topo)[1] == content
    assert topo.passes(*FEED_LISTED, ALLOWED, DENIED) == [False, False, False, True, False]
    assert topo.status_cli()["problems"] == []


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_a_failed_apply_whose_last_ruleset_is_refused_too_ends_fail_closed(
        topology: Topology, resolv_conf: Path, mode: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At boot, the new policy refused and the last applied ruleset refused as well (the same
    missing kernel feature, a damaged set store): the apply ended "NO TABLE", egress open.
    The fail-closed table must go in, also when the new policy is an audit one (egress was
    closed by the last applied ruleset)."""
    topo = topology
    monkeypatch.setattr(failclosed, "resolv_conf_servers", lambda: ["203.0.113.53"])
    marked = POLICY_A.replace("    proto: tcp\ndeny:", "    proto: tcp\n"
                              "    comment: refused-by-the-test-kernel\ndeny:")
    assert marked != POLICY_A
    proc = topo.cli("apply", str(topo.write_policy(marked, "last.yaml")))
    assert proc.returncode == 0, proc.stderr  # the real kernel takes it
    _reboot(topo)
    new = REFUSED if mode == "enforce" else REFUSED.replace("version: 1\n",
                                                            "version: 1\nmode: audit\n")
    err = _apply_refused(topo, new, "new.yaml")
    assert isinstance(err, FailClosedError), err
    assert "NO TABLE" not in str(err) and "FAIL-CLOSED" in str(err)
    assert "could not be put back" in str(err)
    assert ("inet", "outguard") in topo.tables()
    assert topo.passes(Probe("203.0.113.53", 53, "udp"), DENIED, ALLOWED) == [True, False, False]
    status = topo.status_cli()
    assert status["fail_closed"] and topo.cli("status", "--check").returncode == 2


BOOT_UNIT = Path(__file__).resolve().parents[2] / "packaging/systemd/outguard-restore.service"


def _boot(topo: Topology, policy: Path) -> subprocess.CompletedProcess[str]:
    """The shipped boot unit's `ExecStart=` (packaging/systemd/outguard-restore.service:
    `/bin/sh -c 'outguard restore || exec outguard apply POLICY'`), read from the unit, with
    this checkout's outguard, this test's POLICY, --netns and --state-dir."""
    line = next(x for x in BOOT_UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[:2] == ["/bin/sh", "-c"], argv
    where = f"--netns {topo.server} --state-dir {topo.state_dir}"
    script = (argv[2].replace("/etc/outguard/policy.yaml", str(policy))
              .replace("outguard restore", f"outguard restore {where}")
              .replace(str(policy), f"{policy} {where}")
              .replace("/usr/bin/outguard", f"{sys.executable} -m outguard"))
    assert script.count(where) == 2, script
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_boot_unit_never_leaves_a_feed_policy_open(topology: Topology, resolv_conf: Path,
                                                       ) -> None:
    """The shipped boot unit's sequence with a policy that has feeds: a first boot (nothing applied:
    restore fails, apply runs), a reboot (restore), and a reboot whose state cannot be put back
    with a policy that no longer loads (the fail-closed table, the unit fails)."""
    topo = topology
    topo.add_addresses(*ADDRESSES, "198.51.100.70")
    (topo.state_dir.parent / "bad.txt").write_text("198.51.100.7\n198.51.100.64/26\n"
                                                  "2001:db8:bad::7\n")
    (topo.state_dir.parent / "quiet.txt").write_text("")
    policy = topo.write_policy(FEED_POLICY, "feeds.yaml")
    proc = _boot(topo, policy)  # first boot
    assert proc.returncode == 0 and "nothing to restore" in proc.stderr, proc.stderr
    assert topo.passes(*FEED_LISTED, ALLOWED, DENIED) == [False, False, False, True, False]
    content = _table(topo)[1]
    _reboot(topo)
    proc = _boot(topo, policy)
    assert proc.returncode == 0 and proc.stdout.startswith("restored policy"), proc.stderr
    assert _table(topo)[1] == content
    # the stored sets are lost and the policy file is broken now
    _reboot(topo)
    for stored in (topo.state_dir / "sets").glob("*.bin"):
        stored.write_bytes(b"damaged")
    policy.write_text(BROKEN)
    proc = _boot(topo, policy)
    assert proc.returncode == 1 and "FAIL-CLOSED" in proc.stderr, proc.stderr
    assert ("inet", "outguard") in topo.tables()
    assert topo.passes(*FEED_LISTED, ALLOWED, DENIED, Probe("203.0.113.53", 53, "udp")) == [
        False, False, False, False, False, True]
