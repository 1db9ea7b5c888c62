"""Applying safely: nothing changes when a policy fails, no moment without rules while
re-applying, `--confirm-timeout` rolls back even when the applying process dies, `rollback` by
hand, and outguard touches no table but its own (`apply`, re-apply, `rollback`, `remove`).

Each test builds the two-namespace topology of tests/kernel/topology.py; outguard acts in its
server namespace only (the CLI with `--netns`, or `apply.run` in this process with an `Nft` bound to
the namespace). The rollback watchdog always runs inside that namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from outguard.apply.run import apply_policy
from outguard.errors import KernelError
from outguard.kernel import netns as ns
from outguard.kernel.libnft import Nft
from outguard.state import StateDir
from tests.kernel.topology import (
    DROPPED,
    PASSED,
    REFUSED_MARK,
    Background,
    Probe,
    RefusingKernel,
    Topology,
)

pytestmark = pytest.mark.kernel

POLICY_A = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10"]
    ports: [443]
  - name: mirrors
    to: ["@mirrors"]
    ports: [80]
    proto: tcp
  - name: range-a
    to: [203.0.113.20/30]
    ports: ["8000-8100"]
    proto: tcp
deny:
  - name: attacker-net
    to: [198.51.100.0/24, "2001:db8:bad::/48"]
lists:
  mirrors: [203.0.113.200, 203.0.113.248/29]
"""

# B differs from A everywhere a delta can: a port, a new rule with new sets, a changed list
# (new content digest, so a new kernel set), a deny rule gained and one rule gone.
POLICY_B = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10"]
    ports: [443, 8443]
  - name: mirrors
    to: ["@mirrors"]
    ports: [80]
    proto: tcp
  - name: only-in-b
    to: [203.0.113.30, "2001:db8:30::30"]
    ports: [80]
    proto: tcp
deny:
  - name: attacker-net
    to: [198.51.100.0/24, "2001:db8:bad::/48"]
  - name: blocked-host
    to: [203.0.113.66]
lists:
  mirrors: [203.0.113.200, 203.0.113.201, 203.0.113.248/29]
"""

ONLY_IN_B = Probe("203.0.113.30", 80, "tcp")  # passes with B applied, dropped with A
ADDRESSES = ["203.0.113.10", "2001:db8:10::10", "203.0.113.30", "2001:db8:30::30",
             "198.51.100.7", "2001:db8:bad::7", "203.0.113.200"]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _state_files(state_dir: Path) -> dict[str, str]:
    """Digest of every file of the state directory except the lock and the watchdog's log."""
    return {str(p.relative_to(state_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(state_dir.rglob("*"))
            if p.is_file() and p.name not in ("lock", "watchdog.log")}


def _wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def _pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (child of ours) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def with_a(topology: Topology) -> Topology:
    topology.add_addresses(*ADDRESSES)
    topology.apply(POLICY_A)
    return topology


# --- 5. a failing policy changes nothing --------------------------------------------------

BAD_POLICIES = {
    # (a) does not load: YAML syntax; validation (unknown key, port out of range)
    "yaml-syntax": ("version: 1\nallow:\n  - name: [web\n", None),
    "validation": ("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n"
                   "    ports: [80, 99999]\n    colour: red\n",
                   ["5:17: allow[0].ports[1]", "6:5: allow[0].colour"]),
    "uid-out-of-range": ("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n"
                         "    for: {user: 4294967296}\n", ["5:17: allow[0].for.user"]),
}
# (b) loads and compiles, the kernel refuses the transaction: test_kernel_refusal_leaves_...


@pytest.mark.parametrize("kind", list(BAD_POLICIES))
def test_failing_policy_leaves_ruleset_and_state_byte_identical(with_a: Topology,
                                                                kind: str) -> None:
    topo = with_a
    text, positions = BAD_POLICIES[kind]
    ruleset, state = topo.ruleset(), _state_files(topo.state_dir)
    status = topo.status()
    path = topo.write_policy(text, f"{kind}.yaml")

    proc = topo.cli("apply", str(path), "--confirm-timeout", "30")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "applied" not in proc.stdout
    if kind.startswith("kernel-"):
        assert proc.stderr.startswith("error: nftables refused"), proc.stderr
    else:
        lines = proc.stderr.splitlines()
        assert lines[-1].endswith("nothing was applied"), proc.stderr
        n_lines = text.count("\n") + 1
        for line in lines[:-1]:
            m = re.match(rf"{re.escape(str(path))}:(\d+):(\d+): ", line)
            assert m, f"not FILE:LINE:COL: {line!r}"
            assert 1 <= int(m[1]) <= n_lines, line
        for pos in positions or []:
            assert any(f"{path}:{pos}" in line for line in lines), (pos, proc.stderr)

    assert topo.ruleset() == ruleset, "the ruleset changed"
    assert _state_files(topo.state_dir) == state, "the state directory changed"
    after = topo.status()
    assert after["policy_hash"] == status["policy_hash"]
    assert after["pending_confirmation"] is None
    # the watchdog started for --confirm-timeout did not survive the failure
    _wait_for(lambda: not _pids_in(topo.server), 5, "the watchdog to exit")



def test_a_kernel_refusal_leaves_ruleset_and_state_byte_identical(with_a: Topology) -> None:
    """(b) a policy that loads and compiles, and the kernel refuses the transaction."""
    topo = with_a
    ruleset, state, status = topo.ruleset(), _state_files(topo.state_dir), topo.status()
    path = topo.write_policy("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n"
                             f"    comment: {REFUSED_MARK}\n", "kernel.yaml")
    with pytest.raises(KernelError):
        apply_policy(path, StateDir(topo.state_dir), RefusingKernel(topo.kernel()),
                     confirm_timeout=30, spawn_watchdog=lambda *_a: 0)
    assert topo.ruleset() == ruleset, "the ruleset changed"
    assert _state_files(topo.state_dir) == state, "the state directory changed"
    assert topo.status() == status


# --- 6. re-applying never opens a gap ------------------------------------------------------


def test_reapplying_100_times_never_shows_a_moment_without_rules(with_a: Topology) -> None:
    """Two probers (IPv4, IPv6) keep sending to a denied and an allowed destination, TCP and
    UDP, while A and B are applied alternately 100 times: no denied probe may ever pass and no
    allowed one may ever fail."""
    topo = with_a
    path_a, path_b = topo.write_policy(POLICY_A, "a.yaml"), topo.write_policy(POLICY_B, "b.yaml")
    methods: dict[str, int] = {}
    with Background(topo.server, ("198.51.100.7", 443), ("203.0.113.10", 443)) as v4, \
            Background(topo.server, ("2001:db8:bad::7", 443), ("2001:db8:10::10", 443)) as v6:
        time.sleep(0.2)
        t0 = time.monotonic()
        for i in range(100):
            report = topo.apply(path_b if i % 2 == 0 else path_a)
            methods[report.method] = methods.get(report.method, 0) + 1
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
    for prober in (v4, v6):
        assert prober.error is None, repr(prober.error)
    gaps = v4.gaps + v6.gaps
    counts = {f"v4 {k}": n for k, n in v4.counts.items()} | {
        f"v6 {k}": n for k, n in v6.counts.items()}
    print(f"100 applies in {elapsed:.1f} s ({methods}); probes: {counts}")
    assert not gaps, f"{len(gaps)} gap(s), first ones: {gaps[:10]}"
    assert methods == {"delta": 100}
    assert all(n >= 100 for n in counts.values()), counts  # the probers really ran throughout
    assert topo.status()["policy_hash"] == _hash(POLICY_A)


def test_reapply_after_the_table_was_removed_behind_our_back(with_a: Topology) -> None:
    """The state says A is applied, but someone deleted the table: the next apply cannot use a
    delta and replaces the whole table, still in one transaction."""
    topo = with_a
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.status()["applied"] is False
    report = topo.apply(POLICY_B)
    assert report.method == "full"
    assert topo.passes(ONLY_IN_B, Probe("198.51.100.7", 443)) == [True, False]
    assert topo.status()["policy_hash"] == _hash(POLICY_B)


def test_reapply_restores_rules_changed_behind_our_back(with_a: Topology) -> None:
    """Someone put an `accept` at the top of our output chain: re-applying the same policy
    (a delta) flushes our chains — the commit moved the ruleset generation, so none is
    trusted to be as recorded — and the denied destination is blocked again."""
    topo = with_a
    denied = Probe("198.51.100.7", 443)
    topo.nft("insert", "rule", "inet", "outguard", "output", "accept")
    assert topo.passes(denied) == [True]
    assert topo.apply(POLICY_A).method == "delta"
    assert topo.passes(denied) == [False]


def _table(topo: Topology) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Our table as the kernel holds it: rule handles per chain, and the content (rules per
    chain without handles, sets with their elements, counter names) to compare applies by."""
    doc = json.loads(topo.nft("-j", "list", "table", "inet", "outguard"))["nftables"]
    handles: dict[str, list[int]] = {}
    rules: dict[str, list[str]] = {}
    sets: dict[str, str] = {}
    counters: list[str] = []
    for item in doc:
        ((kind, body),) = item.items()
        if kind == "chain":
            handles.setdefault(body["name"], [])
            rules.setdefault(body["name"], [])
        elif kind == "rule":
            handles[body["chain"]].append(body["handle"])
            rules[body["chain"]].append(json.dumps([body["expr"], body.get("comment")],
                                                   sort_keys=True))
        elif kind in ("set", "map"):
            # the log gate's and held SYNs' sets (fl_) are filled by the packets themselves
            skip = ("handle", "elem") if body["name"].startswith("fl_") else ("handle",)
            sets[body["name"]] = json.dumps({k: v for k, v in body.items() if k not in skip},
                                            sort_keys=True)
        elif kind == "counter":
            counters.append(body["name"])
    return handles, {"rules": rules, "sets": sets, "counters": sorted(counters)}


# A changes in one rule's ports only: one group chain refers to a new port set
POLICY_A_PORTS = POLICY_A.replace('ports: ["8000-8100"]', 'ports: ["8000-8200"]')


def test_a_delta_refills_only_the_chains_whose_rules_changed(with_a: Topology) -> None:
    """The switch of a delta flushes and refills only changed chains; the others keep their
    rules (same handles), and the table ends up exactly as a full apply makes it."""
    topo = with_a
    topo.add_addresses("203.0.113.21")
    before, _ = _table(topo)
    assert topo.apply(POLICY_A_PORTS).method == "delta"
    after, content = _table(topo)
    kept = [c for c in before if c in after and before[c] == after[c]]
    refilled = [c for c in before if c in after and before[c] != after[c]]
    assert len(refilled) == 1 and refilled[0].startswith("g_a_")
    assert {"output", "deny", "allow", "v_default"} <= set(kept)
    assert topo.passes(Probe("203.0.113.21", 8150, "tcp"), Probe("203.0.113.21", 8250, "tcp"),
                       Probe("203.0.113.10", 443, "tcp")) == [True, False, True]
    # the same policy applied from scratch gives the same table
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.apply(POLICY_A_PORTS).method == "full"
    assert _table(topo)[1] == content


def test_a_delta_leaves_exactly_what_a_full_apply_makes(with_a: Topology) -> None:
    """A → B drops a rule (its group chain still uses an old port set and counter), gains
    others and changes a list: after the delta nothing old is left over — the cleanup was not
    refused — and the table equals B applied from scratch."""
    topo = with_a
    assert topo.apply(POLICY_B).method == "delta"
    _, content = _table(topo)
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None
    assert sorted(recorded.inventory["chains"]) == sorted(content["rules"])
    assert sorted(recorded.inventory["sets"]) == sorted(content["sets"])
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.apply(POLICY_B).method == "full"
    assert _table(topo)[1] == content


def test_a_commit_by_someone_else_makes_the_next_delta_refill_every_chain(
        with_a: Topology) -> None:
    """After another commit in the namespace outguard cannot know its chains are untouched
    from the generation alone: it reads back its table's object names and rules (netlink, no
    set elements). Another table's commit leaves them as recorded: no chain is refilled. A
    rule changed in our table does: the next delta refills all of them; the one after that,
    with nothing in between, refills none."""
    topo = with_a
    first, _ = _table(topo)
    topo.nft("add", "table", "inet", "someone-else")
    assert topo.apply(POLICY_A).method == "delta"
    assert _table(topo)[0] == first
    topo.nft("add", "rule", "inet", "outguard", "v_default", "counter")
    assert topo.apply(POLICY_A).method == "delta"
    second, _ = _table(topo)
    assert all(first[c] != second[c] for c in first if first[c])
    assert topo.apply(POLICY_A).method == "delta"
    assert _table(topo)[0] == second
    topo.nft("delete", "table", "inet", "someone-else")


# --- 7. confirm-timeout, confirm, rollback --------------------------------------------------


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, or "" if none comes within `timeout`."""
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


@pytest.mark.parametrize("kill", ["process", "process-group"])
def test_confirm_timeout_rolls_back_after_the_apply_process_is_killed(with_a: Topology,
                                                                      kill: str) -> None:
    """SIGKILL the apply right after it says "applied" (the process alone, or its whole process
    group as a dying SSH session would): the watchdog restores A at the deadline."""
    topo = with_a
    content_a = _table(topo)[1]
    assert topo.passes(ONLY_IN_B) == [False]
    path_b = topo.write_policy(POLICY_B, "b.yaml")

    argv = [sys.executable, "-m", "outguard", "apply", str(path_b), "--confirm-timeout", "3",
            "--netns", topo.server, "--state-dir", str(topo.state_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = _first_line(proc, timeout=30)
        assert line.startswith("applied "), f"{line!r}"
        # `ip netns exec` execs the command: proc.pid is the python process itself
        if kill == "process":
            proc.send_signal(signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    killed_at = time.monotonic()
    pending = topo.status()["pending_confirmation"]
    assert pending is not None and pending["policy_hash"] == _hash(POLICY_B)
    assert _table(topo)[1] != content_a
    assert topo.passes(ONLY_IN_B) == [True]

    _wait_for(lambda: topo.status()["pending_confirmation"] is None, 10, "the rollback")
    assert time.monotonic() - killed_at >= 1.5, "rolled back long before the deadline"
    assert _table(topo)[1] == content_a, "A is back: its rules, sets and counters"
    status = topo.status_cli()
    assert status["policy_hash"] == _hash(POLICY_A) and status["applied"]
    assert topo.passes(ONLY_IN_B) == [False]
    log = (topo.state_dir / "watchdog.log").read_text()
    assert "watchdog: rolled back" in log, log
    assert status["last_rollback"]["by"] == "watchdog"
    assert status["last_rollback"]["from"] == _hash(POLICY_B)
    _wait_for(lambda: not _pids_in(topo.server), 5, "the watchdog to exit")


def test_confirm_in_time_keeps_the_new_policy(with_a: Topology) -> None:
    """A window long enough for a loaded machine (a 2 s one expired between apply and
    confirm); once confirmed, the watchdog exits: nothing is left that could roll back."""
    topo = with_a
    path_b = topo.write_policy(POLICY_B, "b.yaml")
    proc = topo.cli("apply", str(path_b), "--confirm-timeout", "60")
    assert proc.returncode == 0, proc.stderr
    # the exact command: this namespace and this (not the default) state directory
    hint = f"`outguard confirm --netns {topo.server} --state-dir {topo.state_dir}`"
    assert f"rolls back in 60 s unless you run {hint}" in proc.stdout, proc.stdout
    snapshot_b = topo.ruleset()
    watchdog = json.loads((topo.state_dir / "pending.json").read_text())["watchdog_pid"]
    assert _alive(watchdog)

    confirmed = topo.cli("confirm")
    assert confirmed.returncode == 0 and confirmed.stdout.startswith("confirmed policy")
    _wait_for(lambda: not _alive(watchdog), 5, "the watchdog to exit after confirm")
    time.sleep(0.5)
    assert topo.ruleset() == snapshot_b
    status = topo.status_cli()
    assert status["policy_hash"] == _hash(POLICY_B) and status["pending_confirmation"] is None
    assert topo.passes(ONLY_IN_B) == [True]
    again = topo.cli("confirm")  # nothing waits now: an error, not a silent success
    assert again.returncode == 1 and "nothing waits for confirmation" in again.stderr


def test_rollback_by_hand_restores_the_previous_policy(with_a: Topology) -> None:
    topo = with_a
    content_a = _table(topo)[1]
    topo.apply(POLICY_B)
    assert topo.passes(ONLY_IN_B) == [True]
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rolled back to the policy applied at")
    assert _table(topo)[1] == content_a
    assert topo.status()["policy_hash"] == _hash(POLICY_A)
    assert topo.passes(ONLY_IN_B) == [False]
    # and A's rules work after the rollback like before it
    assert topo.passes(Probe("203.0.113.10", 443, "udp"), Probe("198.51.100.7", 443)) == [
        True, False]


def _set_handles(topo: Topology) -> dict[str, int]:
    """Kernel handles of our sets and maps, and of the table itself (":table"): a set made
    again gets a new handle, but only within the same table (a new table counts from 1)."""
    doc = json.loads(topo.nft("-j", "list", "table", "inet", "outguard"))["nftables"]
    return {":table" if kind == "table" else body["name"]: body["handle"]
            for item in doc for kind, body in item.items() if kind in ("table", "set", "map")}


def test_a_rollback_is_a_delta_that_leaves_exactly_the_previous_table(
        with_a: Topology) -> None:
    """`rollback` from B to A, like an apply, keeps the sets both use (same kernel objects,
    not loaded again), deletes B's own only after the switch, and leaves what a full apply of
    A makes; the recorded inventory is the kernel's."""
    topo = with_a
    content_a = _table(topo)[1]
    topo.apply(POLICY_B)
    shared = {n: h for n, h in _set_handles(topo).items() if n in content_a["sets"]}
    assert shared, "A and B share no set: the test proves nothing"
    shared[":table"] = _set_handles(topo)[":table"]
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    after = _set_handles(topo)
    assert {n: after.get(n) for n in shared} == shared, "a shared set was made again"
    _, content = _table(topo)
    assert content == content_a
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None
    assert sorted(recorded.inventory["chains"]) == sorted(content["rules"])
    assert sorted(recorded.inventory["sets"]) == sorted(content["sets"])
    assert sorted(recorded.inventory["counters"]) == content["counters"]
    assert topo.passes(ONLY_IN_B, Probe("203.0.113.10", 443, "tcp")) == [False, True]


def test_a_rollback_after_our_table_was_deleted_by_hand_makes_it_whole_again(
        with_a: Topology) -> None:
    """The kernel does not hold what outguard recorded (its table is gone): the rollback's delta
    is refused, and it replaces the whole table instead."""
    topo = with_a
    content_a = _table(topo)[1]
    topo.apply(POLICY_B)
    topo.nft("delete", "table", "inet", "outguard")
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert _table(topo)[1] == content_a
    assert topo.passes(ONLY_IN_B, Probe("203.0.113.10", 443, "tcp")) == [False, True]


# C: A plus a rule of its own and a forward chain, objects B and A do not have
POLICY_C = POLICY_A.replace("deny:", "  - name: only-in-c\n    to: [203.0.113.77]\n"
                            "    ports: [25]\n    proto: tcp\ndeny:") + "options:\n  forward: true\n"


def _apply_c_and_die_unrecorded(topo: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """`apply C` dies (a BaseException for SIGKILL) after its commit, before recording it,
    with no watchdog: the kernel holds C, the state dir still says what was there before."""
    from outguard.apply.run import apply_policy

    class Died(BaseException):
        pass

    def die(*_args: object, **_kw: object) -> None:
        raise Died

    with monkeypatch.context() as patched:
        patched.setattr(StateDir, "write", die)
        with pytest.raises(Died):
            apply_policy(topo.write_policy(POLICY_C, "c.yaml"), StateDir(topo.state_dir),
                         topo.kernel())
    assert "forward" in _table(topo)[1]["rules"]  # the kernel holds C


def test_an_apply_after_one_that_died_unrecorded_leaves_exactly_its_own_table(
        with_a: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next apply cannot trust the record (the generation moved): it starts from the
    names the kernel lists, so C's forward chain, chains and sets go too; and what it records
    is then exact, so a rollback after it leaves exactly A again."""
    topo = with_a
    content_a = _table(topo)[1]
    _apply_c_and_die_unrecorded(topo, monkeypatch)
    assert topo.apply(POLICY_B).method == "delta"
    _, content_b = _table(topo)
    assert "forward" not in content_b["rules"]
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None and recorded.generation is not None
    assert sorted(recorded.inventory["chains"]) == sorted(content_b["rules"])
    assert sorted(recorded.inventory["sets"]) == sorted(content_b["sets"])
    assert sorted(recorded.inventory["counters"]) == content_b["counters"]
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert _table(topo)[1] == content_a
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.apply(POLICY_B).method == "full"
    assert _table(topo)[1] == content_b


def test_a_set_nobody_recorded_is_filled_again_when_the_policy_needs_it(
        with_a: Topology) -> None:
    """An apply killed between creating a set (a feed's is filled in a later batch) and
    recording its state leaves the set in the kernel, maybe empty. The next apply must not take
    it as made: here the set B's new list needs exists, declared as B declares it, but empty."""
    from outguard.nftables import nft_tx
    from tests.nftables.helpers import compiled_of

    topo = with_a
    topo.add_addresses("203.0.113.201")
    compiled_b = compiled_of(POLICY_B)
    (name,) = [n for n in compiled_b.sets if n.startswith("l_mirrors_") and n.endswith("_4a")]
    decl = nft_tx.set_decl(compiled_b.sets[name], len(compiled_b.sets[name].elements()))
    topo.kernel().run_json(nft_tx.document([decl]))
    assert topo.apply(POLICY_B).method == "delta"
    assert topo.passes(Probe("203.0.113.201", 80, "tcp")) == [True]  # only in B's mirrors
    _, content = _table(topo)
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.apply(POLICY_B).method == "full"
    assert _table(topo)[1] == content


def test_a_chain_named_forward_made_by_hand_gets_its_hook(with_a: Topology) -> None:
    """A regular chain called `forward` in our table (made by hand), then a policy with
    `forward: true`: the chain outguard fills must be the one on the forward hook."""
    topo = with_a
    topo.nft("add", "chain", "inet", "outguard", "forward")
    topo.apply(POLICY_C)
    doc = json.loads(topo.nft("-j", "list", "chain", "inet", "outguard", "forward"))
    (chain,) = [item["chain"] for item in doc["nftables"] if "chain" in item]
    assert chain.get("hook") == "forward" and chain.get("type") == "filter"


def test_a_rollback_after_an_apply_that_died_unrecorded_leaves_exactly_the_previous_table(
        with_a: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """A, then B; then an apply of C (with a forward chain and a rule of its own) dies after
    its commit, before recording it, with no watchdog. The kernel holds C, the state says B:
    the rollback (to A) cannot trust B's inventory, and must leave exactly A — C's forward
    chain and rule gone too, no rule twice — and record what it left."""
    topo = with_a
    content_a = _table(topo)[1]
    topo.apply(POLICY_B)
    _apply_c_and_die_unrecorded(topo, monkeypatch)
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    _, content = _table(topo)
    assert content == content_a
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None and recorded.policy_hash == _hash(POLICY_A)
    assert sorted(recorded.inventory["chains"]) == sorted(content["rules"])
    assert sorted(recorded.inventory["sets"]) == sorted(content["sets"])
    # and the next apply, a delta from what was recorded, leaves what a full apply makes
    assert topo.apply(POLICY_B).method == "delta"
    _, content_b = _table(topo)
    topo.nft("delete", "table", "inet", "outguard")
    assert topo.apply(POLICY_B).method == "full"
    assert _table(topo)[1] == content_b


def test_rollback_of_a_pending_apply_by_hand_stops_the_watchdog(with_a: Topology) -> None:
    topo = with_a
    content_a = _table(topo)[1]
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "60")
    assert proc.returncode == 0, proc.stderr
    watchdog = json.loads((topo.state_dir / "pending.json").read_text())["watchdog_pid"]
    assert topo.cli("rollback").returncode == 0
    assert _table(topo)[1] == content_a
    assert topo.status()["pending_confirmation"] is None
    _wait_for(lambda: not _alive(watchdog), 5, "the watchdog to exit after rollback")


def test_rollback_without_previous_state_removes_the_table(topology: Topology) -> None:
    topology.add_addresses(*ADDRESSES)
    topology.nft("add", "table", "inet", "other")
    proc = topology.cli("apply", str(topology.write_policy(POLICY_A)))
    assert proc.returncode == 0, proc.stderr
    assert ("inet", "outguard") in topology.tables()
    assert topology.passes(Probe("198.51.100.7", 443)) == [False]

    # without --remove it refuses: that rollback would open all egress
    proc = topology.cli("rollback")
    assert proc.returncode == 1 and "open all egress" in proc.stderr, proc.stderr
    assert ("inet", "outguard") in topology.tables()
    assert topology.status()["policy_hash"] == _hash(POLICY_A)

    proc = topology.cli("rollback", "--remove")
    assert proc.returncode == 0, proc.stderr
    assert "removed outguard's table" in proc.stdout
    assert topology.tables() == [("inet", "other")]
    status = topology.status()
    assert not status["applied"] and not status["table_present"]
    assert topology.passes(Probe("198.51.100.7", 443)) == [True]


def test_a_second_rollback_refuses_to_remove_the_table(with_a: Topology) -> None:
    """A, then B, rollback (to A): the rollback after that has no previous policy, and used to
    remove the table without asking, opening all egress."""
    topo = with_a
    topo.apply(POLICY_B)
    assert topo.cli("rollback").returncode == 0
    ruleset = topo.ruleset()
    proc = topo.cli("rollback")
    assert proc.returncode == 1, proc.stdout
    assert "rollback --remove" in proc.stderr and "open all egress" in proc.stderr
    assert topo.ruleset() == ruleset
    assert topo.status()["policy_hash"] == _hash(POLICY_A)
    assert topo.passes(Probe("198.51.100.7", 443)) == [False]


def test_apply_while_a_confirmation_is_pending_never_ends_on_the_unconfirmed_policy(
        with_a: Topology) -> None:
    """A applied; B applied with --confirm-timeout; C applied (no timeout) before B's deadline.
    Whatever outguard does with C (refuse it, or take it as the new policy), the watchdog must
    not leave the unconfirmed B in the kernel when the deadline passes."""
    topo = with_a
    policy_c = POLICY_A.replace("ports: [443]", "ports: [443, 993]")
    path_c = topo.write_policy(policy_c, "c.yaml")
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), "--confirm-timeout",
                    "5")
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 5
    topo.cli("apply", str(path_c))  # refused or applied: both are fine
    assert time.monotonic() < deadline - 1, "C came too late to test this"
    _wait_for(lambda: topo.status()["pending_confirmation"] is None, 10, "the deadline")
    time.sleep(0.3)
    status = topo.status()
    assert status["policy_hash"] in (_hash(POLICY_A), _hash(policy_c)), (
        "the watchdog 'rolled back' to the unconfirmed policy B (the `previous` of C)")
    assert topo.passes(ONLY_IN_B) == [False], "B's rules are in the kernel after its deadline"


# --- 8 and 11. other tables are never touched -----------------------------------------------

OTHER_TABLE = """\
table inet other {
	counter seen {
	}
	set keep {
		type ipv4_addr
		elements = { 203.0.113.1 }
	}
	chain out {
		type filter hook output priority 10; policy accept;
		ip daddr @keep counter name "seen"
		ip daddr 203.0.113.77 counter accept
	}
}
"""


def _make_other_tables(topo: Topology) -> list[tuple[str, str]]:
    topo.nft("-f", "-", input=OTHER_TABLE)
    made = [("inet", "other")]
    if all(ns.run(topo.server, ["sh", "-c", f"command -v {tool}"], check=False).returncode == 0
           for tool in ("iptables-nft", "ip6tables-nft")):
        ns.run(topo.server, ["iptables-nft", "-A", "OUTPUT", "-d", "203.0.113.77", "-p", "tcp",
                             "--dport", "9", "-j", "ACCEPT"])
        ns.run(topo.server, ["ip6tables-nft", "-A", "OUTPUT", "-d", "2001:db8:77::77", "-j",
                             "ACCEPT"])
        made += [("ip", "filter"), ("ip6", "filter")]
    else:  # what iptables-nft would have made
        topo.nft("-f", "-", input="table ip filter {\n chain OUTPUT {\n  type filter hook output"
                 " priority filter; policy accept;\n  ip daddr 203.0.113.77 tcp dport 9 counter"
                 " accept\n }\n}\n")
        made.append(("ip", "filter"))
    return made


def _other_texts(topo: Topology, tables: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    return {t: topo.nft("list", "table", *t) for t in tables}


def test_other_tables_are_untouched_by_apply_reapply_rollback_and_remove(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(*ADDRESSES)
    others = _make_other_tables(topo)
    texts = _other_texts(topo, others)
    assert len(texts) >= 2

    steps = [("apply A", ["apply", str(topo.write_policy(POLICY_A, "a.yaml"))]),
             ("re-apply B", ["apply", str(topo.write_policy(POLICY_B, "b.yaml"))]),
             ("rollback", ["rollback"]),
             ("re-apply B", ["apply", str(topo.state_dir.parent / "b.yaml")])]
    for what, argv in steps:
        proc = topo.cli(*argv)
        assert proc.returncode == 0, f"{what}: {proc.stderr}"
        assert _other_texts(topo, others) == texts, f"{what} changed another table"
        assert sorted(topo.tables()) == sorted([*others, ("inet", "outguard")])
    # the other tables' chains still run next to ours: an allowed flow passes all of them
    assert topo.passes(Probe("203.0.113.10", 443)) == [True]
    assert _other_texts(topo, others) == texts

    proc = topo.cli("remove")
    assert proc.returncode == 0 and proc.stdout.strip() == "removed outguard's table"
    assert sorted(topo.tables()) == sorted(others), "remove deleted only outguard's table"
    assert _other_texts(topo, others) == texts, "remove changed another table"
    assert not topo.status()["applied"]
    assert topo.passes(Probe("198.51.100.7", 443)) == [True]  # nothing of ours is left
    # remove again: nothing to remove (and it says so), still nothing else touched
    proc = topo.cli("remove")
    assert proc.returncode == 0 and proc.stdout.strip() == "no outguard table to remove"
    assert _other_texts(topo, others) == texts


@pytest.mark.parametrize("dies", ["after-kernel-commit", "before-kernel-commit"])
def test_apply_that_dies_midway_still_rolls_back_to_the_policy_before_it(
        with_a: Topology, monkeypatch: pytest.MonkeyPatch, dies: str) -> None:
    """`apply B --confirm-timeout` dies (a BaseException stands for SIGKILL) at a point of its
    run; whatever rolls it back (the watchdog, or `outguard rollback` when no watchdog was
    started) must leave A, the policy before B, in the kernel."""
    from outguard.apply.run import apply_policy

    topo = with_a
    snapshot_a, content_a = topo.ruleset(), _table(topo)[1]

    class Died(BaseException):
        pass

    def die(*_args: object, **_kw: object) -> int:
        raise Died

    def spawn(token: str, deadline: float, base: str) -> int:  # the CLI's, in the namespace
        argv = ns.exec_argv(topo.server, [
            sys.executable, "-m", "outguard", "_watchdog", "--state-dir", str(topo.state_dir),
            "--token", token, "--deadline", repr(deadline), "--base", base])
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True).pid

    if dies == "after-kernel-commit":
        monkeypatch.setattr(StateDir, "write", die)
    with pytest.raises(Died):
        apply_policy(topo.write_policy(POLICY_B, "b.yaml"), StateDir(topo.state_dir),
                     topo.kernel(), confirm_timeout=2,
                     spawn_watchdog=spawn if dies == "after-kernel-commit" else die)
    monkeypatch.undo()
    assert topo.status()["pending_confirmation"] is not None
    if dies == "after-kernel-commit":
        assert topo.passes(ONLY_IN_B) == [True]  # the kernel holds B
        _wait_for(lambda: topo.status()["pending_confirmation"] is None, 10, "the rollback")
        time.sleep(0.3)
    else:
        assert topo.ruleset() == snapshot_a  # the kernel never got B
        proc = topo.cli("rollback")
        assert proc.returncode == 0, proc.stderr
    assert _table(topo)[1] == content_a, "A is not what the rollback left in the kernel"
    assert topo.passes(ONLY_IN_B, Probe("198.51.100.7", 443)) == [False, False]


def test_probes_classify_as_documented(with_a: Topology) -> None:
    """The topology's own check: a passed and a dropped flow of each protocol."""
    got = with_a.probe([Probe("203.0.113.10", 443, "tcp"), Probe("203.0.113.10", 443, "udp"),
                        Probe("198.51.100.7", 443, "tcp"), Probe("198.51.100.7", 443, "udp")])
    assert got[0] in PASSED and got[1] in PASSED and got[2] in DROPPED and got[3] in DROPPED


def test_a_refused_cleanup_keeps_the_new_rules_and_records_what_is_left(netns: str,
                                                                         tmp_path: Path) -> None:
    """A delta deletes what is gone only after the rules switched (nft_tx.Phases). When the
    kernel refuses that deletion — here a chain added by hand into outguard's table still
    looks into the old port set — the new rules stay, and the old objects are recorded so that
    a later apply deletes them."""
    state = StateDir(tmp_path / "state")
    path_a, path_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    path_a.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443, 444]}\n")
    path_b.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [8443, 8444]}\n")

    def inventory() -> dict[str, list[str]]:
        snap = state.snapshot("applied")
        assert snap is not None
        return snap.inventory

    def sets_in_kernel() -> set[str]:
        listing = json.loads(ns.run(netns, ["nft", "-j", "list", "sets", "inet"]).stdout)
        return {item["set"]["name"] for item in listing["nftables"] if "set" in item}

    with Nft(netns) as nft:
        apply_policy(path_a, state, nft, resolver=lambda _n: [])
    (old_ports,) = [n for n in inventory()["sets"] if n.startswith("p_")]
    ns.run(netns, ["nft", "add", "chain", "inet", "outguard", "by-hand"])
    ns.run(netns, ["nft", "add", "rule", "inet", "outguard", "by-hand", "tcp", "dport",
                   f"@{old_ports}", "accept"])
    # The hand edit moved the generation, so the next apply would list the kernel's objects
    # and delete the chain itself. To reach a refused cleanup, the record is made to look
    # current: outguard then believes its table holds only what it recorded.
    meta_path = state.path / "applied" / "state.json"
    meta = json.loads(meta_path.read_text())
    with Nft(netns) as nft:
        meta["generation"] = list(nft.generation())
    meta_path.write_text(json.dumps(meta))

    with Nft(netns) as nft:
        report = apply_policy(path_b, state, nft, resolver=lambda _n: [])
    assert report.method == "delta"
    (new_ports,) = [n for n in inventory()["sets"] if n.startswith("p_") and n != old_ports]
    assert old_ports in inventory()["sets"]  # still in the kernel: recorded
    refused = state.snapshot("applied")
    assert refused is not None and refused.generation is None  # the next apply lists the kernel
    assert {old_ports, new_ports} <= sets_in_kernel()
    listing = ns.run(netns, ["nft", "list", "table", "inet", "outguard"]).stdout
    assert f"@{new_ports}" in listing and listing.count(f"@{old_ports}") == 1  # by hand only

    ns.run(netns, ["nft", "delete", "chain", "inet", "outguard", "by-hand"])
    with Nft(netns) as nft:
        assert apply_policy(path_b, state, nft, resolver=lambda _n: []).method == "delta"
    assert old_ports not in inventory()["sets"] and old_ports not in sets_in_kernel()
    assert new_ports in sets_in_kernel()
