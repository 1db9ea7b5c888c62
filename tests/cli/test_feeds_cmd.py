"""`outguard feeds update | list | show | check` as a user runs them.

check/list/show go through click's CliRunner (no kernel). `update` runs as a real process with
`--netns` (it re-executes itself inside the namespace), against an HTTP server on 127.0.0.1 in
that same ogt-<hex> namespace and a temporary state directory; kernel-marked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.kernel import netns as ns
from tests.kernel.conftest import _fresh_netns

LIST = "198.51.100.1\n198.51.100.2\n203.0.113.0/25\n10.0.0.0/8\nnot-an-address\n# comment\n"
POLICY = """version: 1
deny:
  - name: threat-intel
    to: ["@feed:corp-bad"]
feeds:
  corp-bad: {url: "http://127.0.0.1:18099/list.txt", format: plain, min_interval: 60}
"""


def test_check_reads_and_validates_a_file(tmp_path: Path) -> None:
    good = tmp_path / "list.txt"
    good.write_text(LIST)
    result = CliRunner().invoke(cli, ["feeds", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "4 entries, 1 bad lines" in result.output
    assert f"{good}:5: not an IP address or network: not-an-address" in result.output
    assert "never-block" in result.output and "10.0.0.0/8" in result.output
    assert "ok: 3 entries after merging" in result.output  # two addresses, one network
    page = tmp_path / "page.txt"
    page.write_text("<!DOCTYPE html><html><title>Login</title></html>\n")
    refused = CliRunner().invoke(cli, ["feeds", "check", str(page)])
    assert refused.exit_code == 1 and "HTML" in refused.output


def test_list_and_show(tmp_path: Path) -> None:
    state = tmp_path / "state"
    listed = CliRunner().invoke(cli, ["feeds", "list", "--state-dir", str(state)])
    assert listed.exit_code == 0, listed.output
    assert "spamhaus-drop" in listed.output and "feodo" in listed.output
    shown = CliRunner().invoke(cli, ["feeds", "show", "spamhaus-drop", "--state-dir", str(state)])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["spec"]["name"] == "spamhaus-drop" and info["last_good_copy"] is None
    unknown = CliRunner().invoke(cli, ["feeds", "show", "no-such-feed", "--state-dir", str(state)])
    assert unknown.exit_code != 0 and "no feed named 'no-such-feed'" in unknown.output


# the kernel tests' own fresh-namespace fixture (tests/cli does not see tests/kernel's conftest)
namespace = pytest.fixture(name="namespace")(_fresh_netns)


def og(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outguard", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.kernel
def test_update_list_show_against_a_server(namespace: str, tmp_path: Path) -> None:
    www, state = tmp_path / "www", tmp_path / "state"
    www.mkdir()
    (www / "list.txt").write_text(LIST)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-m",
                               "http.server", "--bind", "127.0.0.1", "--directory", str(www),
                               "18099"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kernel = ["--netns", namespace, "--state-dir", str(state)]
        assert og("apply", *kernel, str(policy)).returncode == 0
        for _ in range(50):  # the server is up once a fetch works
            done = og("feeds", "update", "--now", "--json", *kernel)
            if '"updated"' in done.stdout:
                break
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["feeds"][0]["status"] == "updated" and data["feeds"][0]["count"] == 3
        assert data["sync"]["changed"] == {"corp-bad": [3, 0]}
        assert data["sync"]["content_to_kernel_s"] > 0
        listing = ns.run(namespace, ["nft", "list", "table", "inet", "outguard"]).stdout
        assert "198.51.100.1" in listing and "198.51.100.2" in listing
        assert "203.0.113.0/25" in listing and "10.0.0.0/8" not in listing

        again = og("feeds", "update", *kernel)  # within min_interval: not due, nothing sent
        assert again.returncode == 0 and "not-due" in again.stdout
        (www / "list.txt").write_text(LIST.replace("198.51.100.2\n", "198.51.100.9\n"))
        changed = og("feeds", "update", "--now", *kernel)
        assert changed.returncode == 0, changed.stderr
        assert "synced corp-bad: +1 -1" in changed.stdout
        listing = ns.run(namespace, ["nft", "list", "table", "inet", "outguard"]).stdout
        assert "198.51.100.9" in listing and "198.51.100.2" not in listing

        listed = og("feeds", "list", "--state-dir", str(state))
        row = next(line for line in listed.stdout.splitlines() if line.startswith("corp-bad"))
        assert row.split()[5] == "3"  # entries of the last good copy
        shown = json.loads(og("feeds", "show", "corp-bad", "--state-dir", str(state)).stdout)
        assert shown["record"]["count"] == 3 and shown["last_good_copy"].endswith("good.bin")

        (www / "list.txt").write_text("<html><title>502</title></html>\n")
        refused = og("feeds", "update", "--now", *kernel)
        assert refused.returncode == 1 and "refused" in refused.stdout + refused.stderr
        listing = ns.run(namespace, ["nft", "list", "table", "inet", "outguard"]).stdout
        assert "198.51.100.9" in listing  # the last good set stays
    finally:
        server.terminate()
        server.wait(10)
