"""Wildcards against the Public Suffix List: `*.domain` only where one party owns every name
below it, whatever the flows say."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.journey.psl import registrable, wildcard_safe
from outguard.journey.suggest import suggest

from .flows import flow


@pytest.mark.parametrize(("domain", "safe"), [
    ("example.com", True), ("example.co.uk", True), ("github.com", True),
    ("co.uk", False),  # a public suffix
    ("s3.amazonaws.com", False),  # every customer's buckets
    ("amazonaws.com", False),  # registrable, but public suffixes lie below it
    ("github.io", False), ("cloudfront.net", False), ("com", False),
    ("x.example.com", False),  # not a registrable domain: fold to example.com instead
])
def test_wildcard_safe(domain: str, safe: bool) -> None:
    assert wildcard_safe(domain) is safe


def test_registrable() -> None:
    assert registrable("a.b.example.co.uk") == "example.co.uk"
    assert registrable("bucket.s3.amazonaws.com") == "bucket.s3.amazonaws.com"
    assert registrable("co.uk") is None


def _wildcards(names: list[str], fold: int = 3) -> list[str]:
    flows = [flow(f"203.0.113.{i + 1}", names=(n,)) for i, n in enumerate(names)]
    flows.append(flow("192.0.2.53", 53, "udp"))
    s = suggest(flows, fold=fold, user_known=lambda _n: True)
    return sorted(e.value for r in s.rules for e in r.to if e.value.startswith("*."))


def test_many_subdomains_fold_into_the_registrable_domain() -> None:
    assert _wildcards(["a.example.com", "b.example.com", "x.y.example.com"]) == ["*.example.com"]
    assert _wildcards(["a.example.co.uk", "b.example.co.uk", "c.example.co.uk"]) == \
        ["*.example.co.uk"]


def test_public_suffixes_never_become_wildcards() -> None:
    assert _wildcards(["a.co.uk", "b.co.uk", "c.co.uk", "d.co.uk"]) == []
    assert _wildcards(["a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com"]) == []
    assert _wildcards(["ec2.amazonaws.com", "sts.amazonaws.com", "iam.amazonaws.com"]) == []
    assert _wildcards(["a.github.io", "b.github.io", "c.github.io"]) == []


def test_too_few_names_stay_names_and_the_apex_stays() -> None:
    assert _wildcards(["a.example.com", "b.example.com"]) == []
    flows = [flow(f"203.0.113.{i}", names=(n,)) for i, n in
             enumerate(["example.com", "a.example.com", "b.example.com", "c.example.com"], 1)]
    flows.append(flow("192.0.2.53", 53, "udp"))
    s = suggest(flows, user_known=lambda _n: True)
    assert [e.value for r in s.rules for e in r.to] == ["*.example.com", "example.com"]


def test_no_wildcard_over_a_refused_name(tmp_path: Path) -> None:
    flows = [flow(f"203.0.113.{i}", names=(n,)) for i, n in
             enumerate(["a.example.com", "b.example.com", "c.example.com"], 1)]
    flows.append(flow("198.51.100.7", 1389, names=("evil.example.com",), exe="/usr/bin/java",
                      signature="jndi-callback", severity="critical"))
    flows.append(flow("192.0.2.53", 53, "udp"))
    s = suggest(flows, user_known=lambda _n: True)
    values = [e.value for r in s.rules for e in r.to]
    assert "*.example.com" not in values
    assert {"a.example.com", "b.example.com", "c.example.com"} <= set(values)


def test_no_wildcard_without_dns() -> None:
    flows = [flow(f"203.0.113.{i}", names=(n,)) for i, n in
             enumerate(["a.example.com", "b.example.com", "c.example.com"], 1)]
    s = suggest(flows, user_known=lambda _n: True)  # no DNS server seen, none given
    assert s.upstreams == []
    assert not any(e.value.startswith("*.") for r in s.rules for e in r.to)
    assert s.notes and "no DNS server" in s.notes[0]


def test_only_names_on_the_same_ports_fold() -> None:
    """The lab's journey: the API and the mirror on tcp/80, the NTP server on udp/123, all
    below example.test, made `*.example.test` for tcp/80 AND udp/123 — NTP to the API's host,
    HTTP to the NTP server, never seen. Names fold only with names seen on the same ports."""
    flows = [flow("203.0.113.10", 80, names=("api.example.com",)),
             flow("203.0.113.20", 80, names=("mirror.example.com",)),
             flow("203.0.113.40", 123, "udp", names=("ntp.example.com",)),
             flow("192.0.2.53", 53, "udp")]
    s = suggest(flows, user_known=lambda _n: True)
    got = sorted((e.value, r.proto, tuple(r.ports)) for r in s.rules for e in r.to)
    assert got == [("api.example.com", "tcp", ((80, 80),)),
                   ("mirror.example.com", "tcp", ((80, 80),)),
                   ("ntp.example.com", "udp", ((123, 123),))]
    flows.insert(0, flow("203.0.113.11", 80, names=("www.example.com",)))
    s = suggest(flows, user_known=lambda _n: True)
    got = sorted((e.value, r.proto) for r in s.rules for e in r.to)
    assert got == [("*.example.com", "tcp"), ("ntp.example.com", "udp")]
