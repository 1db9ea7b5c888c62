"""A corpus of bad feed inputs is refused; never-block entries are removed and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.feeds.parse import parse
from outguard.feeds.registry import resolve
from outguard.feeds.spec import FeedSpec
from outguard.feeds.validate import Verdict, default_never_block, validate

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
