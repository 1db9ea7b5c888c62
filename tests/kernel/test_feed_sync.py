"""Feeds into a real kernel (an ogt-<hex> namespace): apply, sync as deltas, refusals.

The HTTP server runs on 127.0.0.1 in the test's own namespace; outguard's sets live in the
namespace the test created. Only documentation addresses are used.
"""

from __future__ import annotations

import asyncio
import json
import pwd
from pathlib import Path

import pytest

from outguard.apply.run import apply_policy, feed_host
from outguard.feeds.policy import never_block_of
from outguard.feeds.store import FeedStore
from outguard.feeds.sync import sync_kernel
from outguard.feeds.update import update_feeds
from outguard.kernel import netns as ns
from outguard.kernel.libnft import Nft
from outguard.kernel.setsync import SetChange, apply_in
from outguard.pipeline import load_applied
from outguard.state import StateDir
from tests.feeds.test_fetch import Server
from tests.feeds.test_validate import BAD_CORPUS
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

V1 = ("".join(f"198.51.100.{i}\n" for i in range(1, 101))
      + "203.0.113.0/25\n203.0.113.128/26\n2001:db8::5\n2001:db8:1::/48\n10.0.0.0/8\n")
POLICY = """version: 1
deny:
  - name: threat-intel
    to: ["@feed:corp-bad"]
allow:
  - name: web
    to: [198.51.100.77]
feeds:
  corp-bad: {{url: "{url}/list", format: plain, min_interval: 60}}
"""


def kernel_sets(netns: str) -> dict[str, list[object]]:
    """Elements of outguard's feed sets (small sets: listing them is cheap)."""
    out: dict[str, list[object]] = {}
    data = json.loads(ns.run(netns, ["nft", "-j", "list", "table", "inet", "outguard"]).stdout)
    for item in data["nftables"]:
        s = item.get("set")
        if s and s["name"].startswith("l_feed_"):
            out[s["name"]] = s.get("elem", [])
    return out


def flat(sets: dict[str, list[object]]) -> set[str]:
    items: set[str] = set()
    for elems in sets.values():
        for e in elems:
            if isinstance(e, str):
                items.add(e)
            elif "prefix" in e:  # type: ignore[operator]
                items.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")  # type: ignore[index]
            else:
                items.add("-".join(e["range"]))  # type: ignore[index]
    return items


def test_feed_sync_deltas_and_refusals(netns: str, tmp_path: Path) -> None:
    server = Server()
    try:
        server.body = V1.encode()
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(url=server.url))
        state = StateDir(tmp_path / "state")
        store = FeedStore(state.path / "feeds")
        with Nft(netns) as nft:
            apply_policy(policy, state, nft, resolver=lambda _n: [])
        before = kernel_sets(netns)
        assert len(before) == 4 and not flat(before)  # no good copy yet: empty sets

        def update() -> str:
            loaded = load_applied(state)
            assert loaded is not None
            spec = loaded.lists["feed:corp-bad"].spec  # type: ignore[attr-defined]
            result = asyncio.run(update_feeds([spec], store, never_block_of(loaded.doc, loaded.lists),
                                              ignore_interval=True))[0]
            sync_kernel(state, feed_host(netns))
            return result.status

        assert update() == "updated"
        good = flat(kernel_sets(netns))
        expected = {f"198.51.100.{i}" for i in range(1, 101) if i != 77} | {
            "203.0.113.0-203.0.113.191", "2001:db8::5", "2001:db8:1::/48"}
        assert good == expected  # 10.0.0.0/8 and the allowed 198.51.100.77 were removed
        names = set(kernel_sets(netns))

        # re-apply: the feed sets keep their names and content, nothing is re-sent
        with Nft(netns) as nft:
            apply_policy(policy, state, nft, resolver=lambda _n: [])
        assert set(kernel_sets(netns)) == names and flat(kernel_sets(netns)) == good

        # every bad input is refused; the last good set stays in the kernel
        for case, (body, _previous) in sorted(BAD_CORPUS.items()):
            server.body, server.etag = body, f'"{case}"'
            assert update() == "refused", case
            assert flat(kernel_sets(netns)) == good, case

        # a small change goes in as a delta: one address out, one in
        server.body, server.etag = V1.replace("198.51.100.5\n", "198.51.100.200\n").encode(), '"v2"'
        assert update() == "updated"
        now = flat(kernel_sets(netns))
        assert now == (good - {"198.51.100.5"}) | {"198.51.100.200"}
        assert set(kernel_sets(netns)) == names
        with Nft(netns) as nft:  # and the next apply still sends nothing for it
            apply_policy(policy, state, nft, resolver=lambda _n: [])
        assert flat(kernel_sets(netns)) == now and set(kernel_sets(netns)) == names

        # a changed range is one delete and one add in the interval set
        server.body = (V1.replace("198.51.100.5\n", "198.51.100.200\n")
                       .replace("203.0.113.128/26\n", "").encode())
        server.etag = '"v3"'
        assert update() == "updated"
        assert flat(kernel_sets(netns)) == (now - {"203.0.113.0-203.0.113.191"}) | {"203.0.113.0/25"}
        assert set(kernel_sets(netns)) == names
    finally:
        server.close()


def test_setsync_is_one_transaction(netns: str) -> None:
    ns.run(netns, ["nft", "-f", "-"], input="add table inet outguard\n"
           "add set inet outguard h { type ipv4_addr; }\n"
           "add set inet outguard iv { type ipv6_addr; flags interval; }\n")
    base = 0xC6336400  # 198.51.100.0
    apply_in(netns, [SetChange("h", 4, False, add=[base + 1, base + 2]),
                     SetChange("iv", 6, True, add=[(0x20010DB8 << 96, (0x20010DB8 << 96) + 15)])])
    # the second change names a set that does not exist: nothing of the batch may land
    from outguard.errors import KernelError

    with pytest.raises(KernelError, match="nothing changed"):
        apply_in(netns, [SetChange("h", 4, False, add=[base + 3], delete=[base + 1]),
                         SetChange("missing", 4, False, add=[base + 4])])
    out = ns.run(netns, ["nft", "list", "set", "inet", "outguard", "h"]).stdout
    assert "198.51.100.1" in out and "198.51.100.3" not in out
    iv = ns.run(netns, ["nft", "list", "set", "inet", "outguard", "iv"]).stdout
    assert "2001:db8::-2001:db8::f" in iv or "2001:db8::/124" in iv


def test_feed_that_outgrows_its_set_gets_a_bigger_one(netns: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Feed hash sets are declared with a capacity (a fixed-size hash loads far faster); a feed
    that outgrows it is not synced in place but re-applied: a new, bigger set, filled over
    netlink before the deny rule switches to it."""
    from outguard.apply import applyplan
    from outguard.apply.run import reapply as do_reapply
    from outguard.feeds.sync import FeedHost, sync_feeds

    monkeypatch.setattr(applyplan, "MIN_CAPACITY", 16)
    server = Server()
    try:
        server.body = "".join(f"198.51.100.{i}\n" for i in range(1, 5)).encode()
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(url=server.url))
        state = StateDir(tmp_path / "state")
        store = FeedStore(state.path / "feeds")
        with Nft(netns) as nft:
            apply_policy(policy, state, nft, resolver=lambda _n: [])

        def update() -> tuple[str, bool]:
            loaded = load_applied(state)
            assert loaded is not None
            spec = loaded.lists["feed:corp-bad"].spec  # type: ignore[attr-defined]
            result = asyncio.run(update_feeds([spec], store, never_block_of(loaded.doc, loaded.lists),
                                              ignore_interval=True, force=True))[0]

            def reapply(state: StateDir) -> None:
                with Nft(netns) as nft:
                    do_reapply(state, nft, resolver=lambda _n: [])
            report = sync_feeds(state, FeedHost(load_applied, lambda ch: apply_in(netns, ch),
                                                reapply))
            return result.status, bool(report.outgrown)

        assert update() == ("updated", False)  # 4 addresses fit the first set (16)
        first = [n for n in kernel_sets(netns) if n.endswith("_4a")]
        listing = ns.run(netns, ["nft", "list", "set", "inet", "outguard", first[0]]).stdout
        assert "size 16" in listing
        server.body, server.etag = "".join(f"198.51.100.{i}\n" for i in range(1, 41)).encode(), '"b"'
        assert update() == ("updated", True)  # 40 do not: re-applied
        sets = kernel_sets(netns)
        v4 = [n for n in sets if n.endswith("_4a")]
        assert v4 != first and len(v4) == 1
        assert flat({v4[0]: sets[v4[0]]}) == {f"198.51.100.{i}" for i in range(1, 41)}
        listing = ns.run(netns, ["nft", "list", "set", "inet", "outguard", v4[0]]).stdout
        assert "size 128" in listing  # room to double: 2 x 40 rounded up to a power of two
        rules = ns.run(netns, ["nft", "list", "table", "inet", "outguard"]).stdout
        assert f"@{v4[0]}" in rules and first[0] not in rules
        assert state.snapshot("applied").capacities[v4[0]] == 128  # type: ignore[union-attr]
        # the next small change fits and goes in place, as a delta
        server.body, server.etag = "".join(f"198.51.100.{i}\n" for i in range(2, 42)).encode(), '"c"'
        assert update() == ("updated", False)
        assert set(n for n in kernel_sets(netns) if n.endswith("_4a")) == set(v4)
        assert "198.51.100.41" in flat(kernel_sets(netns))
    finally:
        server.close()


NEVER_BLOCK_POLICY = """version: 1
mode: enforce
allow:
  - name: partners
    to: ["@partners"]
    ports: [443]
    proto: tcp
  - name: mirror
    to: ["@mirrors"]
    ports: [443]
    proto: tcp
lists:
  partners: {file: partners.txt}
  mirrors: [203.0.113.20]
deny:
  - name: threat-intel
    to: ["@feed:local-bad"]
feeds:
  local-bad: {file: bad.txt, format: plain}
dns:
  upstreams: ["192.0.2.53"]
"""
LISTED = "192.0.2.53\n198.51.100.7\n203.0.113.20\n203.0.113.50\n198.51.100.60\n2001:db8:bad::1\n"


def test_feed_never_blocks_the_upstream_nor_a_list_file_allow(topology: Topology) -> None:
    """Blocker 3: after `dns install` resolv.conf names 127.0.0.1, so a feed listing the
    `dns.upstreams` cut all DNS; and only inline allows were spared, not list-file ones."""
    topology.add_addresses("192.0.2.53", "198.51.100.7", "203.0.113.20", "203.0.113.50",
                           "198.51.100.60", "198.51.100.61")
    base = topology.state_dir.parent
    (base / "partners.txt").write_text("198.51.100.7\n")
    (base / "bad.txt").write_text(LISTED)
    report = topology.apply(NEVER_BLOCK_POLICY, resolver=lambda _n: [])
    warning = next(w for w in report.warnings if "never-block" in w)
    assert "192.0.2.53 (DNS upstream 192.0.2.53 of the policy)" in warning
    assert "198.51.100.7 (allowed by rule partners through @partners)" in warning
    assert "203.0.113.20 (allowed by rule mirror through @mirrors)" in warning
    assert flat(kernel_sets(topology.server)) == {"203.0.113.50", "198.51.100.60",
                                                  "2001:db8:bad::1"}
    upstream, partner, mirror, listed, listed2 = (
        # with `dns:` only the resolver's user reaches the upstream (root is dropped)
        Probe("192.0.2.53", 53, "udp", pwd.getpwnam("outguard-dns").pw_uid),
        Probe("198.51.100.7", 443), Probe("203.0.113.20", 443),
        Probe("203.0.113.50", 443), Probe("198.51.100.60", 443))
    assert topology.passes(upstream, partner, mirror, listed, listed2) == [
        True, True, True, False, False]

    # the same through `feeds update` (the sync's own never-block list): one more entry synced,
    # the spared ones still spared and reported once
    (base / "bad.txt").write_text(LISTED + "198.51.100.61\n")
    done = topology.cli("feeds", "update", "--now")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("DNS upstream 192.0.2.53 of the policy") == 1
    assert "synced local-bad: +1 -0" in done.stdout
    assert flat(kernel_sets(topology.server)) == {"203.0.113.50", "198.51.100.60",
                                                  "198.51.100.61", "2001:db8:bad::1"}
    assert topology.passes(upstream, partner, Probe("198.51.100.61", 443)) == [True, True, False]
