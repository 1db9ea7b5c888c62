"""What the fleet agent does to its own host: apply a pushed policy with a confirmation window,
verify it, confirm or roll it back, and put in or lift a lockdown — the same `apply` code the
commands use, so a pushed policy is applied exactly as `outguard apply --verify
--confirm-timeout` would apply it.

Place in the data flow: `fleet.agent` (which decides *what*) → **HostOps** (blocking; the
agent calls it on a worker thread) → `apply.run`, `apply.verify`, `apply.recovery`,
`apply.lockdown` → the kernel of the namespace this process is in. The confirmation
watchdog is the same detached `outguard _watchdog` process that `apply --confirm-timeout`
starts: if the agent dies before it confirms, the host rolls back by itself.

Files: STATE_DIR/fleet/candidate.yaml (the version being applied) and fleet/policy.yaml (the
last version applied and confirmed: what `outguard run --fleet` applies when it starts, with
or without the server).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from outguard.apply import lockdown as ld
from outguard.apply.recovery import FailClosedError, confirm, rollback, watchdog_alive
from outguard.apply.run import apply_policy
from outguard.apply.verify import describe, roll_back_failed, roll_back_mismatch, verify
from outguard.errors import OutguardError
from outguard.kernel.libnft import Nft
from outguard.pipeline import load_applied, lower_policy
from outguard.ruleset.decide import Flow, decide
from outguard.state import StateDir, write_private

CANDIDATE = Path("fleet") / "candidate.yaml"
LAST_GOOD = Path("fleet") / "policy.yaml"


def last_good(state_dir: Path) -> Path:
    return state_dir / LAST_GOOD


@dataclass
class Applied:
    ok: bool
    result: str  # applied (pending confirmation) | apply_failed | verify_failed
    detail: str
    mode: str | None = None


# The watchdog sleeps in a bare interpreter (no site, no outguard: ~10 ms to start instead of
# ~0.4 s of CPU for the whole CLI, which ten hosts applying at once on two cores felt) and
# becomes the real `outguard _watchdog` only at its deadline, as the same process: its argv
# carries `_watchdog`, the state directory and the token from the start, which is how
# `recovery.watchdog_alive` knows it, and `confirm` ends it by its pid.
_SLEEPER = ("import os,sys,time\n"
            "d=float(sys.argv[sys.argv.index('--deadline')+1])\n"
            "time.sleep(max(0.0,d-time.time()))\n"
            "os.execv(sys.executable,[sys.executable,'-m','outguard',*sys.argv[1:]])\n")


def _spawn_watchdog(state_dir: Path) -> Callable[[str, float, str], int]:
    """The rollback watchdog `outguard apply --confirm-timeout` leaves behind (the same hidden
    command at its deadline; it outlives the agent, in the namespace this process is in)."""
    def spawn(token: str, deadline: float, base: str) -> int:
        from outguard.kernel import procs  # noqa: PLC0415

        log = os.open(state_dir / "watchdog.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return procs.start_detached(
                [sys.executable, "-S", "-c", _SLEEPER, "_watchdog", "--state-dir",
                 str(state_dir), "--token", token, "--deadline", repr(deadline), "--base", base],
                log=log)
        finally:
            os.close(log)
    return spawn


class HostOps:
    """The kernel side, for one state directory in this process's network namespace."""

    def __init__(self, state_dir: Path, *, verify_probes: bool = True,
                 probe_timeout: float = 2.0, server: str | None = None) -> None:
        self.state_dir, self.server = state_dir, server
        self.state = StateDir(state_dir)
        self.verify_probes, self.probe_timeout = verify_probes, probe_timeout

    def has_last_good(self) -> bool:
        return last_good(self.state_dir).exists()

    def _nft(self) -> Nft:

        return Nft()

    def apply(self, text: str, confirm_timeout: float) -> Applied:
        """Apply `text` with a confirmation window, then verify it (rolled back on a
        mismatch). `ok` means applied and waiting for `confirm`. The same version already
        applied and waiting for its confirmation (the agent restarted inside the window) is
        taken over as it is: a new apply would be refused while that one waits."""
        path = self.state_dir / CANDIDATE
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, text)
        self.state.ensure()
        with self._nft() as nft:
            if self._waiting_for(text):
                what, mode = "the waiting apply of this version taken over", self._mode()
            else:
                try:
                    report = apply_policy(path, self.state, nft, confirm_timeout=confirm_timeout,
                                          spawn_watchdog=_spawn_watchdog(self.state_dir))
                except FailClosedError as exc:
                    return Applied(False, "apply_failed", f"{exc.cause}; {exc.done}")
                except OutguardError as exc:
                    return Applied(False, "apply_failed", str(exc))
                what = f"applied ({report.rules} rules, {report.timings['total_ms']:.0f} ms)"
                mode = report.mode
            if not self.verify_probes:
                return Applied(True, "applied", what, mode)
            return self._verify(nft, what, mode)

    def _verify(self, nft: Nft, what: str, mode: str | None) -> Applied:
        t0 = time.monotonic()
        try:
            checked = verify(self.state, nft, timeout=self.probe_timeout)
        except OutguardError as exc:
            done = roll_back_failed(self.state, nft, f"verify could not run: {exc}")
            return Applied(False, "verify_failed", f"verify could not run: {exc}; {done}")
        if not checked.ok:
            done = roll_back_mismatch(self.state, nft, checked)
            bad = [line for line in describe(checked) if line.startswith("FAIL")]
            return Applied(False, "verify_failed", "; ".join([*bad[:5], done]))
        return Applied(True, "applied", f"{what}; verified ({len(checked.outcomes)} probes,"
                                        f" {(time.monotonic() - t0) * 1e3:.0f} ms)", mode)

    def _waiting_for(self, text: str) -> bool:
        try:
            pending = self.state.pending()
        except OutguardError:
            return False  # damaged: the apply says what to do about it
        return (pending is not None and time.time() < pending.deadline - 1.0
                and pending.policy_hash == hashlib.sha256(text.encode()).hexdigest()
                and watchdog_alive(pending))

    def _mode(self) -> str | None:
        policy = load_applied(self.state)
        return policy.doc.mode if policy is not None else None

    def confirm(self, text: str) -> str:
        """Keep what `apply` applied; it becomes the last good policy."""
        with self._nft() as nft:
            done = confirm(self.state, nft, time.time())
        write_private(last_good(self.state_dir), text)
        return done

    def rollback(self) -> str:
        with self._nft() as nft:
            return rollback(self.state, nft)

    def lockdown(self, until: float | None) -> str:
        """Put in a lockdown that ends at `until` (unix seconds), or lift it (None)."""
        with self._nft() as nft:
            if until is None:
                ld.end(self.state, nft)
                return "lockdown lifted"
            keep = self.server_rules()
            got = ld.start(self.state, nft, until - time.time(), keep).lockdown
        kept = f", keeping {', '.join(keep)} (the fleet server)" if keep else ""
        return f"lockdown until {got.until_text}{kept}" if got is not None else "no lockdown"

    def server_rules(self) -> list[str]:
        """The applied policy's allow rules that let this host reach its fleet server: a
        lockdown from the fleet keeps them, or the host could not hear it lifted early (nor
        report). None applied, or none that allows it: nothing is kept."""
        if self.server is None:
            return []
        url = urlsplit(self.server)
        if url.hostname is None:
            return []
        policy = load_applied(self.state)
        if policy is None:
            return []
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = {ai[4][0] for ai in socket.getaddrinfo(url.hostname, port,
                                                               proto=socket.IPPROTO_TCP)}
        except OSError:
            return []
        ruleset = lower_policy(policy)
        keep = []
        for addr in sorted(addresses):
            got = decide(ruleset, Flow(dst=str(addr), port=port, proto="tcp", uid=os.geteuid(),
                                       gid=os.getegid()))
            if got.action == "allow" and got.rule.startswith("allow:"):
                keep.append(got.rule.removeprefix("allow:"))
        return list(dict.fromkeys(keep))
