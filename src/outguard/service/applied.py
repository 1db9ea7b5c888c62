"""What the agent follows: the policy applied in the state directory, read whole, and noticed
when it changes.

Place in the data flow: `apply`, `rollback` (by hand or by the confirmation watchdog),
`restore` and a feed sync's re-apply write the applied snapshot (`state.StateDir`:
`applied/state.json` + `applied/policy.yaml`, swapped in by a directory rename) → **here** →
`service.reload`, which prepares the agent's parts for it and switches them.

Why the agent watches the snapshot instead of being told by each command (a pid file and a
signal, or a control socket):
- Every writer is covered, also those that know nothing about agents: the watchdog rolling
  back an unconfirmed apply from its own session, `restore` at boot, a feed sync that
  re-applies, another outguard version, a second agent.
- Nothing goes stale: a pid file outlives a crashed agent, and a reused pid would hand a
  root-sent signal to an unrelated process; a control socket needs a listener that is there
  exactly when the command runs.
- Nothing is lost: a signal sent while the agent restarts is gone, while the snapshot is read
  again at every start.
- It follows what is *applied* — what the kernel holds — never a file that was edited and not
  applied, and it follows an unconfirmed apply back when the watchdog rolls it back.
The price is one stat() of `applied/state.json` every `POLL_S` seconds; a change reaches the
agent within `POLL_S` plus the reload's own time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import StateError
from outguard.pipeline import load_policy
from outguard.policy.loaded import Policy
from outguard.state import Snapshot, StateDir

POLL_S = 0.5
Stamp = tuple[int, int, int]


@dataclass(frozen=True)
class Applied:
    """One applied snapshot, as the agent needs it: its identity and the policy's text."""

    key: str  # unique per apply (the snapshot id)
    policy_hash: str
    applied_at: str
    source: str  # the file it was applied from: relative list files resolve beside it
    text: str
    lists: frozenset[str]  # digests of the list files it loaded

    def describe(self) -> str:
        return f"policy {self.policy_hash[:12]} (applied {self.applied_at} from {self.source})"

    def load(self, state_dir: Path) -> Policy:
        """The policy as it was applied (PolicyError if it no longer loads, e.g. a list file
        beside it went away)."""
        return load_policy(Path(self.source), text=self.text, known_lists=self.lists.__contains__,
                           feed_dir=state_dir / "feeds")


def _key(snap: Snapshot) -> str:
    # a snapshot written before snapshot ids existed: its hash and time tell applies apart
    return snap.snapshot_id or f"{snap.policy_hash}@{snap.applied_at}"


def stamp(state_dir: Path) -> Stamp | None:
    """Cheap fingerprint of the applied snapshot's state file (None: nothing applied). Every
    write replaces the file, so a new apply always gives a new stamp; a new stamp need not be
    a new apply (a rollback records its inventory in place): compare `Applied.key` then."""
    try:
        st = os.stat(state_dir / "applied" / "state.json")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the applied state in {state_dir}: {exc.strerror}") from exc
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_applied(state_dir: Path, attempts: int = 5) -> Applied | None:
    """The applied snapshot, its description and its policy text from the same apply (None:
    nothing applied). An apply swaps the whole folder in by a rename, so reading the state file
    on both sides of the policy text tells whether both came from one apply; if not, it is
    read again. StateError if it is damaged or keeps changing."""
    state = StateDir(state_dir)
    for _ in range(attempts):
        first = state.snapshot("applied")
        if first is None:
            return None
        try:
            text = state.policy_text("applied")
        except OSError as exc:
            raise StateError(f"the applied policy in {state_dir} is unreadable:"
                             f" {exc.strerror}") from exc
        again = state.snapshot("applied")
        if text is not None and again is not None and _key(first) == _key(again):
            return Applied(_key(first), first.policy_hash, first.applied_at, first.source, text,
                           frozenset(first.lists))
    raise StateError(f"the applied policy in {state_dir} kept changing while it was read")
