"""`outguard lab proxy-demo` on the real lab: cloud.example.test moves from cloud-a to cloud-b
between two requests; through the proxy both are answered by name, directly both are dropped
(`proxy: {only_egress: true}`). Hold `flock /tmp/og-lab.lock` around lab test runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from outguard.lab import proxydemo
from outguard.lab import topology as t

pytestmark = pytest.mark.lab


def test_the_name_is_followed_and_the_way_around_stays_closed(lab: t.LabPaths) -> None:
    result = proxydemo.run(lab)
    assert [(s.expect, s.got) for s in result.steps] == [
        ("cloud-a", "cloud-a"), ("blocked", "blocked"), ("cloud-b", "cloud-b"),
        ("blocked", "blocked")], result.lines()
    assert result.ok
    assert lab.cloud_hosts.read_text().startswith(t.host("cloud-a").ipv4)  # put back
    # the CLI prints the same, and says so in its exit status
    cli = subprocess.run([sys.executable, "-m", "outguard", "lab", "proxy-demo"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "the name was followed, the way around stayed closed" in cli.stdout
