"""The `dns:` section: addresses that reach nftables and resolv.conf, the resolver's user, and
where its upstream traffic sits in the ruleset."""

from __future__ import annotations

import dataclasses

import pytest

from outguard.dns import user
from outguard.errors import PolicyError, ResolverUserError
from outguard.nftables.nft import compile_ruleset
from outguard.policy import accounts
from outguard.policy.dnsconf import DEFAULT_USER
from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.lower import lower


def _load(dns: str) -> None:
    load_text(f"version: 1\ndns: {dns}\n")


@pytest.mark.parametrize(("dns", "path", "message"), [
    ('{upstreams: ["fe80::1%eth0"]}', "dns.upstreams[0]", "scope id"),
    ('{upstreams: ["[fe80::1%eth0]:53"]}', "dns.upstreams[0]", "scope id"),
    ('{upstreams: ["::ffff:192.0.2.53"]}', "dns.upstreams[0]", "write the IPv4 address 192.0.2.53"),
    ('{listen: "[::ffff:0.0.0.0]:53", upstreams: ["192.0.2.53"]}', "dns.listen", "IPv4-mapped"),
    ('{listen: "[::]:53", upstreams: ["192.0.2.53"]}', "dns.listen", "not on every address"),
    ('{listen: "[fe80::1%lo\\nnameserver 203.0.113.1]:53", upstreams: ["192.0.2.53"]}',
     "dns.listen", "scope id"),
    ('{upstreams: ["192.0.2.53"], user: root}', "dns.user", "must not run as root"),
    ('{upstreams: ["192.0.2.53"], user: 0}', "dns.user", "must not run as root"),
    ('{upstreams: ["192.0.2.53"], tunnel_names_per_minute: 1}', "dns.tunnel_names_per_minute", ""),
])
def test_bad_dns_sections_are_policy_errors(dns: str, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        _load(dns)
    (problem,) = err.value.problems
    assert problem.path == path and message in problem.message


POLICY = """
version: 1
dns: {upstreams: ["203.0.113.53"]}
deny:
  - name: intel
    to: [198.51.100.0/24]
allow:
  - name: api
    to: [api.example.test]
"""


def _upstream_denied(rs: Ruleset) -> Ruleset:
    """`rs` with its upstream inside deny rule intel's network. `check` refuses such a policy
    (policy.checks); the kernel's order keeps DNS alive all the same, should one get through."""
    assert rs.dns is not None
    return dataclasses.replace(rs, dns=dataclasses.replace(rs.dns,
                                                           upstreams=(("198.51.100.53", 53),)))


def test_a_deny_rule_covering_the_upstream_is_refused_by_check() -> None:
    with pytest.raises(PolicyError, match=r"covers dns\.upstreams"):
        load_text(POLICY.replace("203.0.113.53", "198.51.100.53"))


def test_the_resolver_reaches_its_upstream_whatever_deny_says() -> None:
    rs = _upstream_denied(lower(load_text(POLICY)))
    assert rs.dns is not None and rs.dns.uid is not None and rs.dns.uid != 0
    resolver = decide(rs, Flow(dst="198.51.100.53", port=53, proto="udp", uid=rs.dns.uid))
    assert (resolver.action, resolver.rule) == ("allow", "builtin:dns")
    root = decide(rs, Flow(dst="198.51.100.53", port=53, proto="udp", uid=0))
    assert (root.action, root.rule) == ("deny", "deny:intel")
    other_port = decide(rs, Flow(dst="198.51.100.53", port=443, uid=rs.dns.uid))
    assert (other_port.action, other_port.rule) == ("deny", "deny:intel")
    # the kernel: the resolver's accept comes before `jump deny`, other DNS after it
    output = compile_ruleset(rs).chains["output"].rules
    comments = [r.comment or next(iter(r.expr[-1])) for r in output]
    assert comments.index("dns: outguard's resolver to its upstream") < comments.index("jump") \
        < comments.index("dns: only through outguard's resolver")


def test_a_missing_default_user_is_created_at_apply_not_at_compile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "user_ids", lambda name: None)
    rs = _upstream_denied(lower(load_text(POLICY)))
    assert rs.dns is not None and (rs.dns.uid, rs.dns.user) == (None, DEFAULT_USER)
    # nobody can be the resolver while it does not exist
    flow = Flow(dst="198.51.100.53", port=53, proto="udp", uid=None)
    assert decide(rs, flow).rule == "deny:intel"
    with pytest.raises(ResolverUserError, match="does not exist yet: `outguard apply`"):
        compile_ruleset(rs)
    made: list[str] = []

    def create(name: str, comment: str) -> tuple[int, int]:
        made.append(name)
        return 4242, 4343
    monkeypatch.setattr("outguard.kernel.privsep.create_system_user", create)
    settings = user.ensure(rs.dns)
    assert made == [DEFAULT_USER] and (settings.uid, settings.gid) == (4242, 4343)
    compile_ruleset(dataclasses.replace(rs, dns=settings))


def test_another_missing_user_is_an_error_and_never_created(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PolicyError, match=r"dns\.user: no user 'no-such-user-og'"):
        lower(load_text('version: 1\ndns: {upstreams: ["192.0.2.53"], user: no-such-user-og}\n'))
    monkeypatch.setattr(accounts, "user_ids", lambda name: (0, 0))
    with pytest.raises(PolicyError, match="uid 0"):
        lower(load_text('version: 1\ndns: {upstreams: ["192.0.2.53"], user: toor}\n'))
