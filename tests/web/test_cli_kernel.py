"""`outguard run --web` as a user runs it: the real CLI in a namespace this test creates
(og-w19d-*; `--netns` re-executes the command inside it, so the dashboard's loopback is the
namespace's), the token file made 0600, the dashboard answering there, and SIGTERM stopping
the agent and its dashboard with it, exit status 0."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outguard.kernel import netns as ns
from outguard.web.auth import TOKEN_FILE
from tests.kernel.conftest import kernel_skip_reason

pytestmark = pytest.mark.kernel

POLICY = "version: 1\nallow:\n  - name: web\n    to: [198.51.100.10]\n    ports: [443]\n"


def _curl(netns: str, url: str, *args: str) -> str:
    got = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "-m", "5", *args, url],
                         check=False, capture_output=True, text=True, timeout=20)
    return got.stdout


def test_run_web_serves_in_its_namespace_and_stops_on_sigterm(tmp_path: Path) -> None:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    netns = f"og-w19d-{secrets.token_hex(3)}"
    ns.add(netns)
    agent: subprocess.Popen[str] | None = None
    try:
        ns.run(netns, ["ip", "link", "set", "lo", "up"])
        (tmp_path / "p.yaml").write_text(POLICY)
        state = tmp_path / "state"
        agent = subprocess.Popen(
            [sys.executable, "-m", "outguard", "run", str(tmp_path / "p.yaml"), "--netns", netns,
             "--state-dir", str(state), "--web", "127.0.0.1:18765"],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while "Log in" not in _curl(netns, "http://127.0.0.1:18765/login"):
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            assert time.monotonic() < deadline, "the dashboard did not come up"
            time.sleep(0.3)
        token_file = state / TOKEN_FILE
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        assert _curl(netns, "http://127.0.0.1:18765/api/overview", "-o", "/dev/null", "-w",
                     "%{http_code}") == "401"
        overview = _curl(netns, "http://127.0.0.1:18765/api/overview", "-H",
                         f"Authorization: Bearer {token}")
        assert '"mode": "enforce"' in overview or '"mode":"enforce"' in overview
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        assert "dashboard on http://127.0.0.1:18765/" in err and "store flushed" in err
        assert _curl(netns, "http://127.0.0.1:18765/login") == ""  # the listener is gone
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        ns.delete(netns)
