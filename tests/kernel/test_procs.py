"""kernel.procs: commands run to their end or killed at a deadline, missing programs named,
detached starts that outlive their starter."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from outguard.kernel import procs


def test_run_captures_text_and_leaves_the_status_to_the_caller() -> None:
    got = procs.run([sys.executable, "-c", "import sys; print(input()); sys.exit(3)"],
                    timeout=30, input="hello")
    assert (got.returncode, got.stdout) == (3, "hello\n")


def test_missing_programs_and_deadlines_are_kernel_errors() -> None:
    with pytest.raises(procs.NotInstalledError, match="`no-such-program-og` is not installed"):
        procs.run(["no-such-program-og"], timeout=5)
    with pytest.raises(procs.TimedOutError, match=r"did not finish in 0\.2 s"):
        procs.run(["sleep", "5"], timeout=0.2)


def test_run_bounded_kills_at_the_deadline_and_keeps_what_was_said() -> None:
    start = time.monotonic()
    got = procs.run_bounded([sys.executable, "-c", "import time; print('started', flush=True);"
                             " time.sleep(5)"], timeout=1.5)
    assert got.code is None and got.stdout == "started\n" and got.pid > 0
    assert time.monotonic() - start < 4.5
    assert procs.run_bounded(["true"], timeout=10).code == 0


def test_start_detached_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        pid = procs.start_detached([sys.executable, "-c", "import os; print(os.getsid(0))"],
                                   log=log)
    finally:
        os.close(log)
    os.waitpid(pid, 0)
    assert (tmp_path / "log").read_text().strip() == str(pid)  # it leads its own session
