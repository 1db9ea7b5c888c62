"""A corpus of bad feed inputs is refused; never-block entries are removed and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.feeds.parse import parse
from outguard.feeds.registry import resolve
from outguard.feeds.spec import FeedSpec, spec_of
from outguard.feeds.validate import Verdict, default_never_block, validate
from outguard.policy.feedconf import FeedDef

SPEC = FeedSpec(name="t", url="http://127.0.0.1/x", format="plain", category="test")
GOOD = "".join(f"198.51.100.{i}\n" for i in range(1, 101)).encode()

BAD_CORPUS = {
    "html error page": (b"<!DOCTYPE html>\n<html><head><title>503</title></head></html>\n", None),
    "html without doctype": (b"\n  <html>\n<body>Rate limited</body></html>", None),
    "login page with title": (b"Welcome\n<title>Sign in</title>\n", None),
    "binary body": (b"\x1f\x8b\x08\x00" + b"\0" * 100, None),
    "empty body": (b"", None),
    "only comments": (b"# Spamhaus DROP\n; nothing today\n", None),
    "mostly garbage": (b"".join(b"error %d\n" % i for i in range(50)) + b"198.51.100.1\n", None),
    "wider than /8": (GOOD + b"12.0.0.0/7\n", None),
    "default route": (GOOD + b"0.0.0.0/0\n", None),
    "ipv6 wider than /24": (GOOD + b"2a00::/16\n", None),
    "shrink over 50%": (GOOD[: len(GOOD) // 3], 100),
    "growth over 3x": (b"".join(b"203.0.113.%d\n198.51.100.%d\n" % (i, i) for i in range(1, 200))
                       + b"".join(b"192.0.2.%d\n" % i for i in range(1, 200)), 100),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPUS))
def test_bad_inputs_are_refused(case: str) -> None:
    data, previous = BAD_CORPUS[case]
    verdict = validate(SPEC, data, parse(data, "plain"), previous, default_never_block())
    assert verdict.content is None
    errors = [a for a in verdict.alerts if a.severity == "error"]
    assert errors and errors[0].kind == "refused" and errors[0].feed == "t"


def test_force_accepts_a_big_change_but_not_an_error_page() -> None:
    small = GOOD[: len(GOOD) // 3]
    assert validate(SPEC, small, parse(small, "plain"), 100, default_never_block(),
                    force=True).content is not None
    page = BAD_CORPUS["html error page"][0]
    assert validate(SPEC, page, parse(page, "plain"), 100, default_never_block(),
                    force=True).content is None


def test_feodo_may_be_empty() -> None:
    data = b"# Feodo Tracker\n# DstIP\n# END 0 entries"
    verdict = validate(resolve("feodo"), data, parse(data, "plain"), 244, default_never_block())
    assert verdict.content is not None and verdict.content.count == 0


def _check(data: bytes, nb_allowed: list[str] = (), resolvers: list[str] = ()) -> Verdict:  # type: ignore[assignment]
    return validate(SPEC, data, parse(data, "plain"), None, default_never_block(resolvers, nb_allowed))


def test_never_block_entries_are_removed_and_reported() -> None:
    data = GOOD + b"10.0.0.0/8\n192.168.1.1\n169.254.169.254\n127.0.0.0/8\nfe80::1\n" \
                  b"9.9.9.9\n203.0.113.0/24\n8.8.8.0/24\n224.0.0.0/3\n"
    verdict = _check(data, nb_allowed=["203.0.113.7"], resolvers=["9.9.9.9"])
    assert verdict.content is not None
    removed = dict(verdict.removed)
    assert set(removed) == {"10.0.0.0/8", "192.168.1.1", "169.254.169.254", "127.0.0.0/8",
                            "fe80::1", "9.9.9.9", "203.0.113.0/24", "224.0.0.0/3"}
    assert "resolver" in removed["9.9.9.9"] and "allowed by the policy" in removed["203.0.113.0/24"]
    assert verdict.content.count == 101  # the 100 good ones and 8.8.8.0/24
    assert any(a.kind == "removed" for a in verdict.alerts)


def test_firehol_level1_loses_its_bogons_only(shared_feeds: Path) -> None:
    data = (shared_feeds / "firehol_level1.netset").read_bytes()
    verdict = validate(resolve("firehol-level1"), data, parse(data, "plain"), None,
                       default_never_block())
    assert verdict.content is not None
    removed = dict(verdict.removed)
    assert "10.0.0.0/8" in removed and "224.0.0.0/3" in removed and len(removed) == 10


def _slash8s(count: int) -> bytes:
    """1.0.0.0/8 ... count.0.0.0/8, each a separate, valid entry."""
    return "".join(f"{n}.0.0.0/8\n" for n in range(1, count + 1)).encode()


def test_a_feed_of_many_slash8s_is_refused_by_its_coverage() -> None:
    """Hostile finding: 223 separate /8s (84 % of IPv4) passed, each within the /8 limit."""
    data = _slash8s(223)
    verdict = validate(SPEC, data, parse(data, "plain"), None, default_never_block())
    assert verdict.content is None and verdict.reason == "coverage"
    message = next(a.message for a in verdict.alerts if a.severity == "error")
    assert "of the IPv4 address space" in message and "max_coverage4" in message
    assert "as many as 2" in message  # /8 networks, after the never-block ones were removed
    # five /8s are 1.95 %: under the 2 % default; six are not
    five, six = _slash8s(5), _slash8s(6)
    assert validate(SPEC, five, parse(five, "plain"), None, default_never_block()).content
    assert validate(SPEC, six, parse(six, "plain"), None,
                    default_never_block()).reason == "coverage"
    # a feed may allow itself more (max_coverage4), and --force does not bypass it
    roomy = SPEC.model_copy(update={"limits": SPEC.limits.model_copy(
        update={"max_coverage4": 0.9})})
    assert validate(roomy, data, parse(data, "plain"), None, default_never_block()).content
    assert validate(SPEC, data, parse(data, "plain"), None, default_never_block(),
                    force=True).content is None


def test_ipv6_coverage_is_capped_too() -> None:
    nets = "".join(f"2a{i:02x}::/24\n" for i in range(0, 256)).encode()  # 256 /24s: 2^-16
    verdict = validate(SPEC, nets, parse(nets, "plain"), None, default_never_block())
    assert verdict.reason == "coverage"
    assert "IPv6 address space" in verdict.alerts[-1].message
    assert "max_coverage6" in verdict.alerts[-1].message


def test_custom_feed_limits_reach_the_spec() -> None:
    spec = spec_of("c", FeedDef(file="/x", max_coverage4=0.5, max_coverage6=0.001, max_growth=9))
    assert (spec.limits.max_coverage4, spec.limits.max_coverage6) == (0.5, 0.001)
    assert spec.limits.max_growth == 9 and spec.limits.max_shrink == 0.5
    assert resolve("firehol-level1").limits.max_coverage4 == 0.05


def _entries(n: int) -> bytes:
    return "".join(f"2001:db8::{i:x}\n" for i in range(1, n + 1)).encode()


@pytest.mark.parametrize(("previous", "now", "refused"), [
    (5, 1000, "growth"),  # below 10 entries the growth limit was skipped: 5 → a million passed
    (5, 300, None),  # a small list is judged as if it had 100 entries: up to 300
    (0, 301, "growth"),
    (100, 301, "growth"),
    (1000, 3000, None),
    (9, 1, None),  # a shrink is judged from 10 entries on: losing a few of a tiny list is noise
    (10, 4, "shrink"),
])
def test_growth_and_shrink_of_small_lists(previous: int, now: int, refused: str | None) -> None:
    data = _entries(now)
    verdict = validate(SPEC, data, parse(data, "plain"), previous, default_never_block())
    assert verdict.reason == refused
    if refused:
        assert "outguard feeds update --force t" in verdict.alerts[-1].message


def test_a_body_that_is_no_list_is_refused_without_echoing_it() -> None:
    data = b"root:$6$s3cr3t:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n198.51.100.1\n"
    verdict = validate(SPEC, data, parse(data, "plain"), None, default_never_block())
    assert verdict.reason == "unreadable"
    shown = repr([a.to_json() for a in verdict.alerts])
    assert "s3cr3t" not in shown and "daemon" not in shown
    assert "first bad lines: 1, 2" in verdict.alerts[-1].message


def test_bad_lines_of_a_list_are_reported_by_number() -> None:
    data = GOOD + b"1.0.0.0/7\nnot-an-address\n"
    verdict = validate(SPEC, data, parse(data, "plain"), None, default_never_block())
    assert verdict.content is not None and verdict.content.count == 100
    alert = next(a for a in verdict.alerts if a.kind == "bad-lines")
    assert "line 101: host bits set" in alert.message and "line 102:" in alert.message


def test_removed_entries_are_all_named_up_to_five() -> None:
    data = GOOD + b"192.0.2.53\n198.51.100.0/24\n"
    nb = default_never_block(upstreams=["192.0.2.53"],
                             allowed=[("198.51.100.7", "allowed by rule web")])
    verdict = validate(SPEC, data, parse(data, "plain"), None, nb)
    alert = next(a for a in verdict.alerts if a.kind == "removed")
    assert "192.0.2.53 (DNS upstream 192.0.2.53 of the policy)" in alert.message
    assert "198.51.100.0/24" in alert.message and "198.51.100.7 (allowed by rule web)" in alert.message
