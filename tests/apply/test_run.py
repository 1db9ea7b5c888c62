"""apply.run: what an apply records of the ruleset generation (`_Watched`), with a kernel stand-in
that counts commits like nf_tables does. The kernel-side behaviour is in
tests/kernel/test_apply_safety.py; this checks the bookkeeping, including what root-only tests
cannot stage (a foreign commit in the middle of an apply, an unknown namespace identity)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from outguard.apply.run import apply_policy
from outguard.apply.transact import Watched as _Watched
from outguard.errors import KernelError
from outguard.kernel.setsync import SetChange
from outguard.state import StateDir


class FakeKernel:
    """Each run bumps the generation by one; `meanwhile` runs just before a commit (someone
    else's commit sneaking in)."""

    def __init__(self, identity: str = "boot/7") -> None:
        self.identity, self.gen = identity, 1
        self.meanwhile: Callable[[], None] | None = None
        self.refuse = False

    def _commit(self) -> None:
        if self.meanwhile is not None:
            self.meanwhile()
        if self.refuse:
            raise KernelError("refused")
        self.gen += 1

    def run_json(self, doc: Any) -> Any:
        self._commit()
        return {}

    def run_text(self, cmd: str) -> str:
        self._commit()
        return ""

    def fill_sets(self, changes: Sequence[SetChange]) -> object:
        self._commit()
        return None

    def generation(self) -> tuple[str, int]:
        return self.identity, self.gen

    def objects(self) -> tuple[list[str], list[str], list[str]] | None:
        return None

    def rules(self, chains: object = None) -> dict[str, str]:
        return {}


def test_only_our_commits_record_the_generation_after_the_last() -> None:
    kernel = FakeKernel()
    watched = _Watched(kernel)
    assert watched.start == ("boot/7", 1)
    watched.run_json({})
    watched.fill_sets([])
    watched.run_text("")
    assert watched.recorded() == ["boot/7", 4]


def test_a_refused_transaction_moves_nothing_and_keeps_the_record() -> None:
    kernel = FakeKernel()
    watched = _Watched(kernel)
    kernel.refuse = True
    with pytest.raises(KernelError):
        watched.run_json({})
    kernel.refuse = False
    watched.run_json({})
    assert watched.recorded() == ["boot/7", 2]


@pytest.mark.parametrize("when", ["before our first", "during ours", "between ours"])
def test_someone_elses_commit_during_the_apply_records_nothing(when: str) -> None:
    kernel = FakeKernel()
    watched = _Watched(kernel)

    def foreign() -> None:
        kernel.gen += 1

    if when == "before our first":
        foreign()
    watched.run_json({})
    if when == "during ours":
        kernel.meanwhile, kernel.refuse = foreign, False
    if when == "between ours":
        foreign()
    watched.run_json({})
    kernel.meanwhile = None
    assert watched.recorded() is None


def test_an_unknown_namespace_identity_records_nothing() -> None:
    # no boot id or no SO_NETNS_COOKIE: a generation alone could match a new namespace's
    watched = _Watched(FakeKernel(identity=""))
    watched.run_json({})
    assert watched.recorded() is None


def test_a_kernel_that_cannot_tell_its_generation_records_nothing() -> None:
    class Blind(FakeKernel):
        def generation(self) -> tuple[str, int]:
            raise KernelError("no netlink")

    watched = _Watched(Blind())
    watched.run_json({})
    assert watched.start is None and watched.recorded() is None


def test_someone_elses_commit_during_a_refused_transaction_records_nothing() -> None:
    """A refused batch moves the generation by none: a move by one then is someone else's."""
    kernel = FakeKernel()
    watched = _Watched(kernel)

    def foreign() -> None:
        kernel.gen += 1

    kernel.meanwhile, kernel.refuse = foreign, True
    with pytest.raises(KernelError):
        watched.run_json({})
    kernel.meanwhile, kernel.refuse = None, False
    watched.run_json({})
    assert watched.recorded() is None


def test_a_batch_that_changed_nothing_keeps_the_apply_clean() -> None:
    """An accepted batch that only declares what exists moves the generation by none: still
    only ours (one move more would be someone else's)."""
    class Still(FakeKernel):
        def _commit(self) -> None:
            if self.meanwhile is not None:
                self.meanwhile()

    kernel = Still()
    watched = _Watched(kernel)
    watched.run_json({})
    assert watched.recorded() == ["boot/7", 1]

    def foreign() -> None:
        kernel.gen += 2

    kernel.meanwhile = foreign
    watched.run_json({})
    assert watched.recorded() is None


class Recording(FakeKernel):
    """Keeps the documents it ran; lists no objects (the listing fails) when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: list[Any] = []
        self.blind = False

    def run_json(self, doc: Any) -> Any:
        self.docs.append(doc)
        return super().run_json(doc)

    def objects(self) -> tuple[list[str], list[str], list[str]] | None:
        if self.blind:
            raise KernelError("netlink dump kept being interrupted")
        return None


def test_an_untrusted_record_that_the_kernel_cannot_list_replaces_the_whole_table(
        tmp_path: Path) -> None:
    """Someone committed since the last apply and the kernel's objects cannot be listed: the
    record may miss objects (an apply killed before recording), so the table is replaced."""
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    state, kernel = StateDir(tmp_path / "state"), Recording()
    assert apply_policy(policy, state, kernel).method == "full"
    assert apply_policy(policy, state, kernel).method == "delta"  # trusted: nothing to do
    kernel.gen += 1  # someone else's commit
    kernel.blind = True
    kernel.docs.clear()
    assert apply_policy(policy, state, kernel).method == "full"
    assert {"delete": {"table": {"family": "inet", "name": "outguard"}}} in \
        kernel.docs[0]["nftables"]


def test_when_even_the_fail_closed_table_is_refused_the_error_says_so(tmp_path: Path) -> None:
    """No table, nothing applied before, and the kernel refuses everything: the command must
    say that the host has no table, not only why the policy failed."""
    from outguard.apply.recovery import FailClosedError

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    kernel = FakeKernel()
    kernel.refuse = True
    with pytest.raises(FailClosedError) as err:
        apply_policy(policy, StateDir(tmp_path / "state"), kernel)
    assert "NO TABLE" in err.value.done and "refused" in str(err.value.cause)


def test_a_pending_confirmation_without_a_live_watchdog_is_orphaned_or_expired() -> None:
    import os

    from outguard.apply.recovery import pending_condition
    from outguard.state import Pending

    assert pending_condition(Pending("t", 100.0, 0, "h", ""), 50.0) == "orphaned"
    assert pending_condition(Pending("t", 100.0, 0, "h", ""), 100.0) == "expired"
    # a pid that runs, but without the token on its command line, is no watchdog of ours
    assert pending_condition(Pending("t0k3n", 100.0, os.getpid(), "h", ""), 50.0) == "orphaned"


def test_a_rollback_with_no_previous_policy_refuses_unless_told(tmp_path: Path) -> None:
    from outguard.apply.recovery import rollback
    from outguard.errors import StateError

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    state, kernel = StateDir(tmp_path / "state"), Recording()
    apply_policy(policy, state, kernel)
    kernel.docs.clear()
    with pytest.raises(StateError, match="open all egress"):
        rollback(state, kernel)
    assert kernel.docs == [] and state.snapshot("applied") is not None
    assert "removed" in rollback(state, kernel, allow_remove=True)
    assert state.snapshot("applied") is None


def test_the_apply_time_is_the_injected_clocks(tmp_path: Path) -> None:
    """`applied_at` read the wall clock although apply was given a clock."""
    from outguard.apply.status import status

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443],"
                      " expires: 2026-12-03T11:00:00Z}\n")
    state = StateDir(tmp_path / "state")
    at = 1796294400.0  # 2026-12-03T10:40:00Z
    apply_policy(policy, state, FakeKernel(), now=lambda: at)
    snap = state.snapshot()
    assert snap is not None and snap.applied_at == "2026-12-03T10:40:00+00:00"
    got = status(state, {}, True, clock=lambda: at)
    assert got["applied_at"] == "2026-12-03T10:40:00+00:00" and got["expired"] == {}
    assert status(state, {}, True, clock=lambda: at + 3600)["expired"] == \
        {"allow:web": "2026-12-03T11:00:00+00:00"}


def test_a_rollback_records_the_injected_clocks_time(tmp_path: Path) -> None:
    """The rollback record's `at` (shown by `status` and `confirm`) read the wall clock."""
    from outguard.apply.recovery import rollback

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    second.write_text("version: 1\nallow:\n  - {name: web, to: [203.0.113.11], ports: [443]}\n")
    state, kernel = StateDir(tmp_path / "state"), FakeKernel()
    apply_policy(first, state, kernel)
    apply_policy(second, state, kernel)
    rollback(state, kernel, clock=lambda: 1796294400.0)
    last = state.last_rollback()
    assert last is not None and last["at"] == "2026-12-03T10:40:00+00:00"
