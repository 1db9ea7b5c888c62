"""engine: what an apply records of the ruleset generation (`_Watched`), with a kernel stand-in
that counts commits like nf_tables does. The kernel-side behaviour is in
tests/kernel/test_apply_safety.py; this checks the bookkeeping, including what root-only tests
cannot stage (a foreign commit in the middle of an apply, an unknown namespace identity)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from outguard.engine import _Watched
from outguard.errors import KernelError
from outguard.kernel.setsync import SetChange


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


def test_a_batch_that_did_not_move_the_generation_records_nothing() -> None:
    class Still(FakeKernel):
        def _commit(self) -> None:
            pass  # accepted, but the generation stays: not a commit we can count

    watched = _Watched(Still())
    watched.run_json({})
    assert watched.recorded() is None
