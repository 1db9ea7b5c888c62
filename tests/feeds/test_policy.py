"""`@feed:NAME` in a policy: loading, errors where they stand, digests, and the feed lookup."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.feeds.lookup import FeedIndex
from outguard.feeds.merge import FeedSet
from outguard.feeds.parse import parse
from outguard.feeds.policy import FEEDS, KEEPING_FEEDS, FeedList
from outguard.feeds.store import FeedStore
from outguard.nftables.nft import compile_ruleset
from outguard.policy import load
from outguard.ruleset.lower import lower

# a policy's `@feed:` lists load as the pipeline loads them
load_text = partial(load.load_text, feeds=FEEDS)

POLICY = """version: 1
deny:
  - name: threat-intel
    to: ["@feed:spamhaus-drop", "@feed:local-bad"]
allow:
  - name: web
    to: [203.0.113.7]
feeds:
  local-bad: {file: bad.txt, format: plain}
"""


def _load(tmp: Path, text: str = POLICY, *, keep_feed_copies: bool = False, **kw: object):
    # apply's loader keeps a `file:` feed's first good read; every other command only reads
    return load.load_text(text, str(tmp / "p.yaml"), base_dir=tmp, feed_dir=tmp / "feeds",
                          feeds=KEEPING_FEEDS if keep_feed_copies else FEEDS, **kw)  # type: ignore[arg-type]


def test_feed_lists_load_and_compile(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("198.51.100.0/24\n203.0.113.7\n10.0.0.0/8\nnope\n")
    store = FeedStore(tmp_path / "feeds")
    store.write_copy("spamhaus-drop", FeedSet.of(parse(b"192.0.2.0/25\n2001:db8::/48\n", "plain")))
    policy = _load(tmp_path)
    local = policy.lists["feed:local-bad"]
    assert isinstance(local, FeedList)
    assert local.content.count == 1  # the allowed 203.0.113.7 and 10/8 removed, "nope" skipped
    assert any("bad.txt" not in w.message and "local-bad" in w.message for w in policy.warnings)
    compiled = compile_ruleset(lower(policy, resolver=lambda _n: []))
    feed_sets = [n for n in compiled.sets if n.startswith("l_feed_")]
    assert len(feed_sets) == 8  # two feeds x {4,6} x {addresses, ranges}
    drop4n = next(s for s in feed_sets if s.startswith("l_feed_spamhaus_drop_") and s.endswith("_4n"))
    assert compiled.sets[drop4n].elements() == [{"prefix": {"addr": "192.0.2.0", "len": 25}}]
    hits = FeedIndex.of_policy(policy).lookup("192.0.2.9")
    assert [(h.feed, h.category) for h in hits] == [("spamhaus-drop", "hijacked-netblock")]
    assert FeedIndex.of_policy(policy).lookup("198.51.100.3")[0].feed == "local-bad"
    assert not FeedIndex.of_policy(policy).lookup("203.0.113.7")


def test_unknown_feed_is_an_error_where_it_is_used(tmp_path: Path) -> None:
    text = POLICY.replace("@feed:spamhaus-drop", "@feed:no-such-feed")
    (tmp_path / "bad.txt").write_text("198.51.100.1\n")
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, text)
    problem = err.value.problems[0]
    assert (problem.line, problem.path) == (4, "deny[0].to[0]") and "no feed named" in problem.message


def test_refused_file_without_good_copy_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("<html><title>oops</title></html>\n")
    with pytest.raises(PolicyError, match="HTML"):
        _load(tmp_path)


def test_digest_follows_the_kernel_record(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("198.51.100.1\n")
    first = _load(tmp_path).lists["feed:spamhaus-drop"].digest
    store = FeedStore(tmp_path / "feeds")
    store.write_copy("spamhaus-drop", FeedSet(a4=[0xC0000201]))
    meta = store.meta("spamhaus-drop")
    meta.digest = store.read_copy("spamhaus-drop").digest()
    store.write_meta("spamhaus-drop", meta)
    changed = _load(tmp_path).lists["feed:spamhaus-drop"].digest
    assert changed != first  # new content, no record: a new set
    store.write_kernel_record("spamhaus-drop", {first: changed})  # a sync filled set `first`
    kept = _load(tmp_path, known_lists=lambda d: d == first).lists["feed:spamhaus-drop"]
    assert kept.digest == first  # the applied set keeps its name: nothing is re-sent


def test_url_copy_is_stripped_again_only_when_the_never_block_list_moved(tmp_path: Path) -> None:
    """A copy records the never-block list it was stripped with: read with the same list it
    goes as it is; with another one (an allow added since), it is stripped again."""
    from outguard.feeds.policy import never_block_of

    store = FeedStore(tmp_path / "feeds")
    # written unstripped on purpose: what is read shows whether the strip ran
    store.write_copy("spamhaus-drop", FeedSet.of(parse(b"203.0.113.7\n198.51.100.9\n", "plain")))
    text = POLICY.replace(', "@feed:local-bad"', "").split("feeds:")[0]

    def read() -> list[int]:
        return sorted(_load(tmp_path, text).lists["feed:spamhaus-drop"].content.a4)  # type: ignore[attr-defined]

    assert read() == [0xC6336409]  # no record: stripped (203.0.113.7 is allowed)
    meta = store.meta("spamhaus-drop")
    meta.nb_digest = never_block_of(_load(tmp_path, text).doc).digest()
    store.write_meta("spamhaus-drop", meta)
    assert read() == [0xC6336409, 0xCB007107]  # stripped with this list already: read as is
    meta.nb_digest = "another list"
    store.write_meta("spamhaus-drop", meta)
    assert read() == [0xC6336409]


def test_an_unreadable_file_feed_keeps_its_last_good_copy(tmp_path: Path) -> None:
    """A `file:` feed that cannot be read failed the whole apply, even with a last good copy
    (a refused one kept it): now both keep it, with a warning; with no copy it is an error."""
    store = FeedStore(tmp_path / "feeds")
    store.write_copy("spamhaus-drop", FeedSet())
    text = POLICY.replace('"@feed:spamhaus-drop", ', "")
    with pytest.raises(PolicyError, match=r"cannot read .*bad\.txt"):
        _load(tmp_path, text)
    store.write_copy("local-bad", FeedSet(a4=[0xC6336409]))
    policy = _load(tmp_path, text)
    assert policy.lists["feed:local-bad"].content.a4 == [0xC6336409]  # type: ignore[attr-defined]
    assert any("cannot read" in w.message and "keeping its last good copy" in w.message
               for w in policy.warnings)


def test_list_file_allows_and_dns_upstreams_are_never_block(tmp_path: Path) -> None:
    from outguard.feeds.policy import never_block_of

    (tmp_path / "partners.txt").write_text("198.51.100.7\n2001:db8:7::/48\n0.0.0.0/0\n")
    (tmp_path / "bad.txt").write_text("198.51.100.7\n2001:db8:7::1\n192.0.2.53\n2001:db8::53\n"
                                      "203.0.113.99\n")
    text = ("version: 1\nallow:\n  - name: partners\n    to: ['@partners']\n"
            "lists:\n  partners: {file: partners.txt}\n"
            "deny:\n  - name: t\n    to: ['@feed:local-bad']\n"
            "feeds:\n  local-bad: {file: bad.txt}\n"
            "dns:\n  upstreams: ['192.0.2.53', '[2001:db8::53]:5353']\n")
    policy = _load(tmp_path, text)
    local = policy.lists["feed:local-bad"]
    assert list(local.content.lines()) == ["203.0.113.99"]  # type: ignore[attr-defined]
    # 0.0.0.0/0 in the allow list means "anywhere": it spares nothing
    nb = never_block_of(policy.doc, policy.lists, resolvers=[])
    assert nb.digest() != never_block_of(policy.doc, None, resolvers=[]).digest()
    whys = {why for ranges in nb.ranges.values() for _a, _b, why in ranges}
    assert "allowed by rule partners through @partners" in whys
    assert not any(a == 0 and b == (1 << 32) - 1 for a, b, _w in nb.ranges[4])


def test_system_resolvers_read_both_files(tmp_path: Path) -> None:
    from outguard.feeds.policy import system_resolvers

    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n")
    (tmp_path / "upstream.conf").write_text("nameserver 192.0.2.1\nnameserver fe80::1%eth0\n"
                                            "nameserver not-an-address\nnameserver 127.0.0.53\n")
    got = system_resolvers([tmp_path / "resolv.conf", tmp_path / "upstream.conf",
                            tmp_path / "missing.conf"])
    assert got == ["127.0.0.53", "192.0.2.1", "fe80::1"]


def test_feed_uses_that_do_nothing_are_warned_about(tmp_path: Path) -> None:
    store = FeedStore(tmp_path / "feeds")
    store.write_copy("urlhaus", FeedSet(domains=["evil.example"]))
    text = "version: 1\ndeny:\n  - name: t\n    to: ['@feed:urlhaus']\n"
    messages = [w.message for w in _load(tmp_path, text).warnings]
    assert any("without a `dns:` section it blocks nothing" in m for m in messages)
    with_dns = text + "dns:\n  upstreams: ['192.0.2.53']\n"
    assert not any("blocks nothing" in w.message for w in _load(tmp_path, with_dns).warnings)
    (tmp_path / "bad.txt").write_text("198.51.100.1\n")
    allowing = ("version: 1\nallow:\n  - name: oops\n    to: ['@feed:local-bad']\n"
                "feeds:\n  local-bad: {file: bad.txt}\n")
    assert any("allow rule oops" in w.message for w in _load(tmp_path, allowing).warnings)


def test_addresses_of_allowed_host_names_stay_blockable(tmp_path: Path) -> None:
    """Documented choice: only addresses and networks an allow rule names are never-block, not
    what an allowed name resolves to (deny beats allow; allow the address to override a feed)."""
    (tmp_path / "bad.txt").write_text("203.0.113.5\n198.51.100.9\n")
    text = ("version: 1\nallow:\n  - name: api\n    to: [api.example.test]\n"
            "deny:\n  - name: t\n    to: ['@feed:local-bad']\n"
            "feeds:\n  local-bad: {file: bad.txt}\n")
    policy = _load(tmp_path, text)
    ruleset = lower(policy, resolver=lambda _n: ["203.0.113.5"])
    assert ruleset.resolved == {"api.example.test": ("203.0.113.5",)}
    assert policy.lists["feed:local-bad"].content.a4 == [0xC6336409, 0xCB007105]  # type: ignore[attr-defined]


def test_a_file_feed_read_at_apply_is_kept_as_its_last_good_copy(tmp_path: Path) -> None:
    """Only `feeds update` kept a copy of a `file:` feed: after an apply alone, a bad file
    failed the policy's every later load (each agent round, `feeds update`, a re-apply)."""
    text = POLICY.replace('"@feed:spamhaus-drop", ', "")
    (tmp_path / "bad.txt").write_text("198.51.100.1\n198.51.100.2\n")
    _load(tmp_path, text)  # check, explain, plan: the store is only read
    store = FeedStore(tmp_path / "feeds")
    assert not store.has_copy("local-bad") and not (tmp_path / "feeds").exists()
    _load(tmp_path, text, keep_feed_copies=True)  # apply
    assert store.has_copy("local-bad") and store.meta("local-bad").count == 2
    assert store.meta("local-bad").fetched_at > 0
    (tmp_path / "bad.txt").write_text("<html><title>oops</title></html>\n")
    policy = _load(tmp_path, text)
    assert policy.lists["feed:local-bad"].content.a4 == [0xC6336401, 0xC6336402]  # type: ignore[attr-defined]
    assert any("keeping its last good copy" in w.message for w in policy.warnings)
