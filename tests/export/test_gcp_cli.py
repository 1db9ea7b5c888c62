"""`outguard compile --target T` for the windows, aws, azure, gcp and k8s targets: the registry
finds each, the fidelity report goes to stderr, and --strict fails on a non-exact rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.export.cloud_inputs import POLICY_DIR

MINE = ["windows", "aws", "azure", "gcp", "k8s"]
# What an exact export of EXACT needs: Windows' own allow rules disabled (PowerShell only), no
# DNS allow of its own for k8s (issue 17: both are reported approximated otherwise).
EXACT_OPTIONS = {"windows": ["-o", "form=powershell", "-o", "builtin-rules=disable"],
                 "k8s": ["-o", "dns=none"]}
EXTRA_LINES = {"k8s": 1}  # the report line `dns`
EXACT = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
    proto: tcp
"""


def _compile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outguard", "compile", *args],
                          capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("target", MINE)
def test_compile_target_and_strict(target: str, tmp_path) -> None:
    mixed = _compile(str(POLICY_DIR / "cloud-mixed.yaml"), "--target", target)
    assert mixed.returncode == 0, mixed.stderr
    assert f"{target}: {11 + EXTRA_LINES.get(target, 0)} rules" in mixed.stderr
    assert "dropped" in mixed.stderr
    assert _compile(str(POLICY_DIR / "cloud-mixed.yaml"), "--target", target,
                    "--strict").returncode != 0
    exact = tmp_path / "exact.yaml"
    exact.write_text(EXACT)
    ok = _compile(str(exact), "--target", target, "--strict", *EXACT_OPTIONS.get(target, []))
    assert ok.returncode == 0, ok.stderr
