"""`outguard feeds update | list | show | check` as a user runs them.

check/list/show go through click's CliRunner (no kernel). `update` runs as a real process with
`--netns` (it re-executes itself inside the namespace), against an HTTP server on 127.0.0.1 in
that same ogt-<hex> namespace and a temporary state directory; kernel-marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.feeds.merge import FeedSet
from outguard.feeds.store import FeedMeta, FeedStore
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
    header, *rows = listed.output.splitlines()
    assert header.split()[-1] == "terms"  # `feeds list` had no terms column
    assert next(r for r in rows if r.startswith("feodo ")).endswith("CC0")
    assert "non-commercial" in next(r for r in rows if r.startswith("dshield "))
    shown = CliRunner().invoke(cli, ["feeds", "show", "spamhaus-drop", "--state-dir", str(state)])
    assert shown.exit_code == 0, shown.output
    assert "https://www.spamhaus.org/drop/drop.txt" in shown.output
    assert "no redistribution" in shown.output and "feeds update spamhaus-drop" in shown.output
    as_json = CliRunner().invoke(cli, ["feeds", "show", "--json", "spamhaus-drop",
                                       "--state-dir", str(state)])
    info = json.loads(as_json.output)
    assert info["name"] == "spamhaus-drop" and info["last_good_copy"] is None
    unknown = CliRunner().invoke(cli, ["feeds", "show", "no-such-feed", "--state-dir", str(state)])
    assert unknown.exit_code != 0 and "no feed named 'no-such-feed'" in unknown.output


def test_show_prints_iso_times_and_sizes_not_epoch_floats(tmp_path: Path) -> None:
    """`feeds show` printed its raw record: `"fetched_at": 1787412345.678`."""
    store = FeedStore(tmp_path / "feeds")
    store.write_copy("feodo", FeedSet(a4=[0xC6336401, 0xC6336402]))
    stamp = 1_787_412_345.678
    store.write_meta("feodo", FeedMeta(count=2, fetched_at=stamp, attempted_at=stamp + 3600,
                                       failures=1, last_error="HTTP 503 from feodotracker",
                                       refused_at=stamp + 60, refusal="coverage"))
    shown = CliRunner().invoke(cli, ["feeds", "show", "feodo", "--state-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "1787412345" not in shown.output and "fetched_at" not in shown.output
    iso = datetime.fromtimestamp(stamp, UTC).astimezone().isoformat(timespec="seconds")
    assert f"confirmed {iso}" in shown.output and "2 entries" in shown.output
    assert " B at " in shown.output and "failing, 1 in a row: HTTP 503" in shown.output
    assert "(coverage)" in shown.output
    machine = json.loads(CliRunner().invoke(cli, ["feeds", "show", "--json", "feodo",
                                                  "--state-dir", str(tmp_path)]).output)
    assert machine["last_good_copy"]["confirmed_at"] == "2026-08-22T15:25:45+00:00"
    assert machine["last_good_copy"]["entries"] == 2 and machine["last_good_copy"]["bytes"] > 0
    assert machine["last_refusal"] == {"at": "2026-08-22T15:26:45+00:00", "reason": "coverage"}
    listed = CliRunner().invoke(cli, ["feeds", "list", "--json", "--state-dir", str(tmp_path)])
    row = next(r for r in json.loads(listed.output) if r["name"] == "feodo")
    assert (row["entries"], row["terms"], row["used"]) == (2, "CC0", False)


def test_update_without_an_applied_policy_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["feeds", "update", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no policy is applied in {tmp_path}" in result.output and "--netns" in result.output


def test_check_refuses_devices_fifos_and_never_echoes_a_non_list(tmp_path: Path) -> None:
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    for path, why in ((fifo, "FIFO"), (Path("/dev/zero"), "device")):
        result = subprocess.run([sys.executable, "-m", "outguard", "feeds", "check", str(path)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 1 and why in result.stderr, result.stderr
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$s3cr3t:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    result = CliRunner().invoke(cli, ["feeds", "check", str(secret)])
    assert result.exit_code == 1 and "not plain entries" in result.output
    assert "s3cr3t" not in result.output and "daemon" not in result.output


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
        assert row.split()[1] == "yes" and row.split()[6] == "3"  # used; entries of the copy
        shown = json.loads(og("feeds", "show", "--json", "corp-bad", "--state-dir",
                              str(state)).stdout)
        assert shown["last_good_copy"]["entries"] == 3
        assert shown["last_good_copy"]["path"].endswith("good.bin")

        (www / "list.txt").write_text("<html><title>502</title></html>\n")
        refused = og("feeds", "update", "--now", *kernel)
        assert refused.returncode == 1 and "refused" in refused.stdout + refused.stderr
        # each alert once: it was logged to stderr and printed as well
        assert (refused.stdout + refused.stderr).count("update refused") == 1
        listing = ns.run(namespace, ["nft", "list", "table", "inet", "outguard"]).stdout
        assert "198.51.100.9" in listing  # the last good set stays
    finally:
        server.terminate()
        server.wait(10)


def test_a_file_feed_is_read_at_every_update_not_hourly() -> None:
    """`feeds show/list` said a `file:` feed is "fetched at most every 1h"; the code reads it
    at every `feeds update` and every agent round (`schedule.next_due` is 0 for it)."""
    from outguard.feeds.report import list_lines, list_row, show_json, show_lines
    from outguard.feeds.schedule import next_due
    from outguard.feeds.spec import FeedDef, spec_of
    from outguard.feeds.store import FeedMeta, FeedStore

    spec = spec_of("local-bad", FeedDef(file="/etc/outguard/bad.txt"))
    assert next_due(spec, FeedMeta(attempted_at=1e9)) == 0.0
    store = FeedStore(Path("/nonexistent/feeds"))
    line = next(x for x in show_lines(spec, store, True) if x.startswith("interval"))
    assert "read at every update" in line and "at least every 5m" in line, line
    assert "fetched at most" not in line
    assert show_json(spec, store, True)["min_interval_s"] is None
    assert list_row(spec, store, True)["min_interval_s"] is None
    assert list_lines([spec], store, {"local-bad"})[1].split()[5] == "update"
    url = spec_of("corp", FeedDef(url="https://intel.example.com/bad.txt"))
    assert any("fetched at most every 1h" in x for x in show_lines(url, store, True))
