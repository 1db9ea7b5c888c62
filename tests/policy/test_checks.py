"""Checks across the document: the `dns:` section the kernel can express, and no deny rule that
cuts the resolver off from its upstreams (issue 14, blocker 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.policy.load import load_text

NAMES = "version: 1\nallow:\n  - {name: web, to: [api.example.test], ports: [443], proto: tcp}\n"


def problems_of(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_text(text, "p.yaml", base_dir=base_dir)
    return [str(p) for p in err.value.problems]


def dns(**fields: str) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return f"dns: {{{body}}}\n"


# --- dns: what the kernel refused, or never matched -------------------------------------------

@pytest.mark.parametrize(("upstreams", "expected"), [
    ("['fe80::1%eth0']", "p.yaml:4:19: dns.upstreams[0]: 'fe80::1%eth0': IPv6 scope ids"
     " (%interface) are not supported; use a global or unique-local address"),
    ("['[fe80::1%lo]:53']", "p.yaml:4:19: dns.upstreams[0]: '[fe80::1%lo]:53': IPv6 scope ids"
     " (%interface) are not supported; use a global or unique-local address"),
    ("['::ffff:192.0.2.53']", "p.yaml:4:19: dns.upstreams[0]: '::ffff:192.0.2.53': an"
     " IPv4-mapped IPv6 address; write the IPv4 address 192.0.2.53"),
    ("['0.0.0.0']", "p.yaml:4:19: dns.upstreams[0]: '0.0.0.0' is not an address a DNS server can"
     " be reached at"),
    ("['192.0.2.53', '::']", "p.yaml:4:33: dns.upstreams[1]: '::' is not an address a DNS"
     " server can be reached at"),
])
def test_upstreams_the_kernel_cannot_match(upstreams: str, expected: str) -> None:
    assert problems_of(NAMES + dns(upstreams=upstreams)) == [expected]


@pytest.mark.parametrize(("user", "expected"), [
    ("-1", "p.yaml:4:38: dns.user: -1 is not a uid"),
    ("4294967295", "p.yaml:4:38: dns.user: 4294967295 is not a uid"),
    ("no-such-user-xyz", "p.yaml:4:38: dns.user: no user 'no-such-user-xyz' on this machine"),
    ("nobdy", "p.yaml:4:38: dns.user: no user 'nobdy' on this machine; did you mean 'nobody'?"),
])
def test_a_resolver_user_that_cannot_be(user: str, expected: str) -> None:
    assert problems_of(NAMES + dns(upstreams="[192.0.2.53]", user=user)) == [expected]


def test_a_mapped_listen_address() -> None:
    assert problems_of(NAMES + dns(upstreams="[192.0.2.53]", listen="'[::ffff:0.0.0.0]:53'")) == [
        "p.yaml:4:40: dns.listen: '[::ffff:0.0.0.0]:53': an IPv4-mapped IPv6 address; write the"
        " IPv4 address 0.0.0.0"]


def test_an_upstream_twice_is_a_warning() -> None:
    policy = load_text(NAMES + dns(upstreams="[192.0.2.53, 192.0.2.53]"), "p.yaml")
    assert [str(w) for w in policy.warnings] == [
        "p.yaml:4:31: dns.upstreams[1]: '192.0.2.53' is listed twice"]


# --- a deny rule that covers an upstream ------------------------------------------------------

UPSTREAM = dns(upstreams="['192.0.2.53', '[2001:db8::53]:5353']")


@pytest.mark.parametrize(("deny", "expected"), [
    ("{name: d, to: [192.0.2.53]}",
     "p.yaml:5:20: deny[0].to[0]: deny rule 'd' covers dns.upstreams[0] '192.0.2.53'"
     " (192.0.2.53): every DNS query would fail. Take the upstream out of it, or use another"
     " upstream"),
    ("{name: d, to: [203.0.113.9, 192.0.2.0/24], ports: [53]}",
     "p.yaml:5:33: deny[0].to[1]: deny rule 'd' covers dns.upstreams[0] '192.0.2.53'"
     " (192.0.2.0/24): every DNS query would fail. Take the upstream out of it, or use another"
     " upstream"),
    ("{name: d, to: ['2001:db8::/32'], proto: udp, ports: ['5000-6000']}",
     "p.yaml:5:20: deny[0].to[0]: deny rule 'd' covers dns.upstreams[1] '[2001:db8::53]:5353'"
     " (2001:db8::/32): every DNS query would fail. Take the upstream out of it, or use another"
     " upstream"),
    ("{name: d, ports: [53]}",
     "p.yaml:5:5: deny[0]: deny rule 'd' covers dns.upstreams[0] '192.0.2.53' (it has no 'to':"
     " every destination): every DNS query would fail. Take the upstream out of it, or use"
     " another upstream"),
    ("{name: d, to: ['@bad']}",
     "p.yaml:5:20: deny[0].to[0]: deny rule 'd' covers dns.upstreams[0] '192.0.2.53' (through"
     " list @bad): every DNS query would fail. Take the upstream out of it, or use another"
     " upstream"),
    ("{name: d, to: [192.0.2.53], for: {user: outguard-dns}}",
     "p.yaml:5:20: deny[0].to[0]: deny rule 'd' covers dns.upstreams[0] '192.0.2.53'"
     " (192.0.2.53): every DNS query would fail. Take the upstream out of it, or use another"
     " upstream"),
])
def test_a_deny_rule_covering_an_upstream_is_an_error(deny: str, expected: str) -> None:
    text = NAMES + "deny:\n  - " + deny + "\nlists:\n  bad: [192.0.2.32/27]\n" + UPSTREAM
    assert problems_of(text) == [expected]


def test_a_deny_in_a_list_file_covering_an_upstream(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("# bad\n198.51.100.0/24\n2001:db8::53\n")
    text = NAMES + "deny:\n  - {name: d, to: ['@bad']}\nlists:\n  bad: {file: bad.txt}\n" + UPSTREAM
    assert problems_of(text, tmp_path) == [
        "p.yaml:5:20: deny[0].to[0]: deny rule 'd' covers dns.upstreams[1] '[2001:db8::53]:5353'"
        " (through list @bad): every DNS query would fail. Take the upstream out of it, or use"
        " another upstream"]


@pytest.mark.parametrize("deny", [
    "{name: d, to: [192.0.2.54]}",  # another address
    "{name: d, to: [192.0.2.53], ports: [80, 443]}",  # not the DNS port
    "{name: d, to: [192.0.2.53], proto: icmp}",  # not DNS
    "{name: d, to: [192.0.2.53], for: {user: nobody}}",  # another process's traffic
    "{name: d, to: [192.0.2.53], for: {unit: nginx.service}}",
])
def test_deny_rules_that_leave_the_upstream_alone(deny: str) -> None:
    load_text(NAMES + "deny:\n  - " + deny + "\n" + UPSTREAM, "p.yaml")


def test_the_upstream_error_comes_with_the_others() -> None:
    text = NAMES + "deny:\n  - {name: d, to: [192.0.2.53]}\n  - {name: e, to: ['@nope']}\n" \
        + UPSTREAM
    assert [line.split(": ", 2)[1] for line in problems_of(text)] == ["deny[0].to[0]",
                                                                     "deny[1].to[0]"]


def test_dns_blocklists_must_be_readable_regular_files(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("bad.example.test\n")
    text = NAMES + dns(upstreams="[192.0.2.53]", blocklists="[ok.txt, missing.txt, /dev/zero]")
    assert problems_of(text, tmp_path) == [
        "p.yaml:4:53: dns.blocklists[1]: cannot read DNS blocklist 'missing.txt': No such file or"
        " directory",
        "p.yaml:4:66: dns.blocklists[2]: cannot read DNS blocklist '/dev/zero': not a regular file"
        " (a character device)"]
