"""Typed errors with messages for people.

Every error that can reach a user derives from `OutguardError`; the CLI prints its message and
exits non-zero. Enforcement paths raise these and never swallow them.
"""

from __future__ import annotations

from dataclasses import dataclass


class OutguardError(Exception):
    """Base of every error outguard reports to a person."""


@dataclass(frozen=True)
class Problem:
    """One finding about a policy file: where it is and what is wrong."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(OutguardError):
    """A policy that does not load. Carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class KernelError(OutguardError):
    """nftables or netlink refused something; the kernel state is unchanged."""


class ResolverUserError(OutguardError):
    """The DNS resolver's user does not exist, or may not be used (`dns.user`)."""


class StateError(OutguardError):
    """The state directory is missing, unreadable or inconsistent."""


class LabError(OutguardError):
    """The lab could not be built, run or removed."""
