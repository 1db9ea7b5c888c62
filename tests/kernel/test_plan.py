"""`outguard plan` says what `apply` does: the same plan (applyplan), so no change apply makes
goes unreported — audit → enforce, log_rate, nflog_group, default_action, `dns:` — and a plan
after the apply is empty. Feed sets are kept when a change elsewhere moves the feed's digest,
and a plan after `feeds update` is empty.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from outguard.apply.applyplan import make_plan
from outguard.apply.run import apply_policy
from outguard.feeds.policy import never_block_of
from outguard.feeds.store import FeedStore
from outguard.feeds.sync import FeedHost, sync_feeds
from outguard.feeds.update import update_feeds
from outguard.kernel.libnft import Nft
from outguard.kernel.setsync import SetChange, apply_in
from outguard.pipeline import load_applied
from outguard.state import StateDir
from tests.feeds.test_fetch import Server
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

BASE = """\
version: 1
mode: audit
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10"]
    ports: [443]
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
"""

CHANGES = {
    "audit-to-enforce": (BASE.replace("mode: audit", "mode: enforce"), ["mode: audit → enforce",
                                                                         "+ drop"]),
    "log_rate": (BASE + "options: {log_rate: 5/minute}\n", ["limit rate over 5/minute"]),
    "nflog_group": (BASE + "options: {nflog_group: 7}\n", ["group 7"]),
    "default_action": (BASE.replace("mode: audit", "mode: enforce")
                       + "options: {default_action: reject}\n",
                       ["+ chain v_reject", "goto v_reject", 'prefix "og:default reject"']),
    "dns": (BASE + "dns: {upstreams: [\"192.0.2.53\"]}\n",
            ["dns: only through outguard's resolver"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_plan_shows_every_change_apply_makes_and_nothing_after_it(topology: Topology,
                                                                  change: str) -> None:
    topo = topology
    topo.cli("apply", str(topo.write_policy(BASE, "base.yaml")))
    text, expected = CHANGES[change]
    path = topo.write_policy(text, "changed.yaml")
    proc = topo.cli("plan", str(path), "--exit-code", "--full")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no changes" not in proc.stdout
    for line in expected:
        assert line in proc.stdout, proc.stdout
    assert topo.cli("apply", str(path)).returncode == 0
    proc = topo.cli("plan", str(path), "--exit-code")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no changes to the kernel" in proc.stdout


class Recording:
    """The real kernel, with every batch it was sent kept."""

    def __init__(self, nft: Nft) -> None:
        self.nft, self.sent = nft, []  # type: ignore[var-annotated]

    def run_json(self, doc: Any) -> Any:
        self.sent.append(doc["nftables"][1:])
        return self.nft.run_json(doc)

    def run_text(self, cmd: str) -> str:
        self.sent.append(cmd)
        return self.nft.run_text(cmd)

    def fill_sets(self, changes: Sequence[SetChange]) -> object:
        self.sent.append([c.name for c in changes])
        return self.nft.fill_sets(changes)

    def generation(self) -> tuple[str, int]:
        return self.nft.generation()

    def objects(self) -> tuple[list[str], list[str], list[str]] | None:
        return self.nft.objects()

    def rules(self, chains: Collection[str] | None = None) -> dict[str, str]:
        return self.nft.rules(chains)


B = BASE.replace("mode: audit", "mode: enforce").replace(
    "deny:", "  - name: more\n    to: ['@mirrors']\n    ports: [80]\ndeny:") + \
    "lists:\n  mirrors: [203.0.113.200, 203.0.113.248/29]\n"


@pytest.mark.parametrize("trusted", [True, False])
def test_apply_sends_exactly_the_plan(topology: Topology, trusted: bool) -> None:
    """The plan's phases and netlink fills are, batch for batch, what apply sends."""
    topo = topology
    topo.apply(BASE)
    if not trusted:  # a rule added by hand to our table: every chain is refilled
        topo.nft("insert", "rule", "inet", "outguard", "output", "accept")
    state, path = StateDir(topo.state_dir), topo.write_policy(B, "b.yaml")
    plan = make_plan(path, state, topo.kernel())
    assert plan.trusted is trusted and plan.phases is not None
    expected = [p for p in (plan.phases.prepare, plan.phases.switch) if len(p) > 1]
    if len(plan.phases.cleanup) > 1:
        expected.append(plan.phases.cleanup)
    recording = Recording(topo.kernel())
    report = apply_policy(path, state, recording)  # type: ignore[arg-type]
    assert report.method == plan.method == "delta"
    assert recording.sent == expected
    assert any(c.get("add", {}).get("set") for c in expected[0])  # the new list's set
    assert len(expected) == 3 if trusted else len(expected) >= 2


FEED_POLICY = """\
version: 1
deny:
  - name: threat-intel
    to: ["@feed:local-bad"]
allow:
  - name: web
    to: [{allowed}]
    ports: [443]
feeds:
  local-bad: {{file: {file}, format: plain}}
"""


def _set_handles(topo: Topology) -> dict[str, int]:
    """Our sets by name → kernel handle (listing without elements: `list sets`)."""
    doc = json.loads(topo.nft("-j", "list", "sets", "inet"))["nftables"]
    doc += json.loads(topo.nft("-j", "list", "maps", "inet"))["nftables"]
    return {body["name"]: body["handle"] for item in doc for kind, body in item.items()
            if kind in ("set", "map") and body.get("table") == "outguard"}


def test_adding_an_allowed_address_keeps_the_unrelated_feed_set(topology: Topology,
                                                                tmp_path: Path) -> None:
    """An allowed address joins the never-block list, so the feed's digest moved and every
    feed set was made again (3.2 s for a 300,000-entry IPv6 feed). The IPv6 set must stay the
    same kernel object, with the same elements."""
    topo = topology
    feed = tmp_path / "bad.txt"
    feed.write_text("".join(f"2001:db8:bad:{i:x}::1\n" for i in range(20000))
                    + "198.51.100.7\n")
    first = FEED_POLICY.format(allowed="203.0.113.10", file=feed)
    topo.apply(first)
    before = {n: h for n, h in _set_handles(topo).items() if n.startswith("l_feed_")}
    assert sorted(n[-2:] for n in before) == ["4a", "4n", "6a", "6n"]
    path = topo.write_policy(FEED_POLICY.format(allowed="203.0.113.10, 203.0.113.11", file=feed),
                             "second.yaml")
    plan = make_plan(path, StateDir(topo.state_dir), topo.kernel())
    assert not [n for n in plan.inventory.sets if n.startswith("l_feed_") and n not in before]
    report = topo.apply(path)
    after = {n: h for n, h in _set_handles(topo).items() if n.startswith("l_feed_")}
    assert after == before, "a feed set was made again"
    assert report.method == "delta"
    (v6,) = [n for n in after if n.endswith("_6a")]
    listing = topo.nft("list", "set", "inet", "outguard", v6)
    assert listing.count("2001:db8:bad:") == 20000
    # nothing left to do, and the same again from the CLI
    again = make_plan(path, StateDir(topo.state_dir), topo.kernel())
    assert not again.changes_kernel()
    proc = topo.cli("plan", str(path), "--exit-code")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_feed_whose_address_becomes_allowed_loses_it_in_place(topology: Topology,
                                                                tmp_path: Path) -> None:
    """When the newly allowed address is in the feed, the kept set loses it (never-block), in
    place: traffic to it passes, the set is the same object."""
    from tests.kernel.topology import Probe

    topo = topology
    topo.add_addresses("198.51.100.7", "203.0.113.10")
    feed = tmp_path / "bad.txt"
    feed.write_text("198.51.100.7\n198.51.100.8\n")
    topo.apply(FEED_POLICY.format(allowed="203.0.113.10", file=feed))
    before = _set_handles(topo)
    assert topo.passes(Probe("198.51.100.7", 443)) == [False]
    topo.apply(FEED_POLICY.format(allowed="203.0.113.10, 198.51.100.7", file=feed))
    assert {n: h for n, h in _set_handles(topo).items() if n.startswith("l_feed_")} == \
        {n: h for n, h in before.items() if n.startswith("l_feed_")}
    assert topo.passes(Probe("198.51.100.7", 443)) == [True]
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None
    assert sorted(recorded.inventory["sets"]) == sorted(_set_handles(topo))
    # the store follows the kernel: nothing left to do
    path = topo.write_policy(FEED_POLICY.format(allowed="203.0.113.10, 198.51.100.7", file=feed),
                             "again.yaml")
    assert not make_plan(path, StateDir(topo.state_dir), topo.kernel()).changes_kernel()


def test_plan_is_empty_after_a_feed_update(netns: str, tmp_path: Path) -> None:
    """After `feeds update` synced a feed's set in place, plan printed `+set/-set (+0/-0)` on
    every run (it loaded the policy without the feed store)."""
    import subprocess
    import sys

    server = Server()
    try:
        server.body = b"198.51.100.1\n198.51.100.2\n"
        policy = tmp_path / "policy.yaml"
        policy.write_text("version: 1\ndeny:\n  - name: threat-intel\n    to: ['@feed:corp']\n"
                          "feeds:\n  corp: {url: \"" + server.url + "/list\", format: plain}\n")
        state = StateDir(tmp_path / "state")
        store = FeedStore(state.path / "feeds")
        with Nft(netns) as nft:
            apply_policy(policy, state, nft, resolver=lambda _n: [])

        def update() -> None:
            loaded = load_applied(state)
            assert loaded is not None
            spec = loaded.lists["feed:corp"].spec  # type: ignore[attr-defined]
            asyncio.run(update_feeds([spec], store, never_block_of(loaded.doc),
                                     ignore_interval=True, force=True))
            sync_feeds(state, FeedHost(load_applied, lambda ch: apply_in(netns, ch),
                                       lambda _state: None))

        update()
        server.body, server.etag = b"198.51.100.1\n198.51.100.3\n", '"b"'
        update()
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-m", "outguard", "plan", str(policy), "--exit-code",
                 "--netns", netns, "--state-dir", str(state.path)],
                capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "set" not in proc.stdout, proc.stdout
    finally:
        server.close()
