"""`proxy: {only_egress, transparent}` in the IR: what `decide` says, and the rules `nft`
compiles from the same settings (the kernel test, tests/kernel/test_proxy_kernel.py, sends
real connections through them)."""

from __future__ import annotations

import json

import pytest

from outguard.errors import ResolverUserError
from outguard.nftables.nft import compile_ruleset
from outguard.nftables.nft_proxy import NAT_CHAIN
from outguard.nftables.nft_text import expr_text
from outguard.policy.load import load_text
from outguard.proxy.guard import for_proxy
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.ir import ProxySettings, Ruleset
from outguard.ruleset.lower import lower

NOBODY, DAEMON = 65534, 1  # the proxy runs as nobody here; daemon is any other user
POLICY = """version: 1
allow:
  - {name: web, to: [203.0.113.10], ports: [443, 8443]}
deny:
  - {name: bad, to: [203.0.113.66]}
proxy: {user: nobody%s}
"""


def ruleset(extra: str) -> Ruleset:
    return lower(load_text(POLICY % extra, "p.yaml"))


def test_without_kernel_options_nothing_changes() -> None:
    rs = ruleset("")
    assert rs.proxy == ProxySettings("nobody", NOBODY)
    assert decide(rs, Flow("203.0.113.10", 443, uid=DAEMON)).rule == "allow:web"
    assert decide(rs, Flow("203.0.113.11", 443, uid=NOBODY)).rule == "default"
    assert NAT_CHAIN not in compile_ruleset(rs).chains


def test_only_egress() -> None:
    rs = ruleset(", only_egress: true")
    assert rs.proxy is not None and rs.proxy.only_egress == (80, 443)
    around = decide(rs, Flow("203.0.113.10", 443, uid=DAEMON))  # allowed by address, yet
    assert (around.verdict, around.rule) == ("drop", "default")
    assert "only through outguard's proxy" in around.reason
    through = decide(rs, Flow("203.0.113.99", 443, uid=NOBODY))
    assert (through.verdict, through.rule) == ("accept", "builtin:proxy")
    assert decide(rs, Flow("203.0.113.66", 443, uid=NOBODY)).rule == "deny:bad"  # deny wins
    assert decide(rs, Flow("203.0.113.10", 8443, uid=DAEMON)).rule == "allow:web"
    assert decide(rs, Flow("203.0.113.99", 8443, uid=NOBODY)).rule == "default"
    assert decide(rs, Flow("127.0.0.1", 443, uid=DAEMON)).rule == "builtin:loopback"
    output = compile_ruleset(rs).chains["output"].rules
    texts = [" ".join(expr_text(e) for e in r.expr) for r in output]
    own = texts.index(f"meta l4proto tcp th dport {{ 80, 443 }} skuid {NOBODY} accept")
    only = texts.index('meta l4proto tcp th dport { 80, 443 } counter name "default"'
                       " goto v_default")
    assert texts.index("jump deny") < own < only < texts.index("jump allow")


def test_transparent() -> None:
    rs = ruleset(", transparent: [443], transparent_port: 3999")
    bent = decide(rs, Flow("203.0.113.99", 443, uid=DAEMON))
    assert (bent.verdict, bent.rule) == ("accept", "builtin:proxy")
    assert "redirected into outguard's proxy" in bent.reason
    # before deny: the proxy checks the original destination against deny rules itself
    assert decide(rs, Flow("203.0.113.66", 443, uid=DAEMON)).rule == "builtin:proxy"
    assert decide(rs, Flow("203.0.113.66", 443, uid=NOBODY)).rule == "deny:bad"
    assert decide(rs, Flow("203.0.113.99", 443, uid=NOBODY)).rule == "builtin:proxy"
    assert decide(rs, Flow("203.0.113.99", 80, uid=DAEMON)).rule == "default"
    assert decide(rs, Flow("203.0.113.99", 443, proto="udp", uid=DAEMON)).rule == "default"
    compiled = compile_ruleset(rs)
    nat = compiled.chains[NAT_CHAIN]
    assert (nat.hook, nat.kind, nat.prio) == ("output", "nat", -100)
    assert [" ".join(expr_text(e) for e in r.expr) for r in nat.rules] == [
        f'meta l4proto tcp th dport 443 skuid != {NOBODY} oif != "lo" redirect to :3999']
    texts = [" ".join(expr_text(e) for e in r.expr) for r in compiled.chains["output"].rules]
    assert texts.index("meta l4proto tcp th dport 3999 ct status dnat ip daddr 127.0.0.1"
                       " accept") < texts.index("jump deny")
    assert "meta l4proto tcp th dport 3999 ct status dnat ip6 daddr ::1 accept" in texts
    json.dumps(compiled.chains[NAT_CHAIN].rules[0].expr)  # JSON, as the transaction sends it


def test_the_proxy_decides_without_the_kernel_rules() -> None:
    """The proxy asks `decide` about a client's request: neither `only_egress` (which would
    refuse every client) nor the redirect (which would allow every one) is its answer."""
    rs = for_proxy(ruleset(", only_egress: true, transparent: [80, 443]"))
    assert rs.proxy is None
    assert decide(rs, Flow("203.0.113.10", 443, uid=DAEMON)).rule == "allow:web"
    assert decide(rs, Flow("203.0.113.99", 443, uid=DAEMON)).rule == "default"


def test_a_missing_proxy_user_stops_the_compile() -> None:
    rs = ruleset(", only_egress: true")
    assert rs.proxy is not None
    rs.proxy = ProxySettings("outguard-proxy", None, (80, 443))
    with pytest.raises(ResolverUserError, match=r"proxy\.user 'outguard-proxy' does not exist"):
        compile_ruleset(rs)


def test_exports_say_they_drop_the_kernel_rules_around_the_proxy() -> None:
    from outguard.export.targets import export

    for target in ("iptables", "ufw"):
        out = export(target, ruleset(", only_egress: true, transparent: [443]"))
        dropped = [f for f in out.fidelity if f.rule == "proxy"]
        assert len(dropped) == 1 and dropped[0].level == "dropped", out.report()
        assert "only_egress and transparent" in dropped[0].how and not out.exact
        plain = export(target, ruleset(""))
        assert not [f for f in plain.fidelity if f.rule == "proxy"]
