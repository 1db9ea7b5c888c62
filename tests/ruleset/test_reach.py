"""What the host itself must reach (its name servers, its feeds' hosts): `check` warns when an
enforcing policy blocks it, naming it and the rule to add. Pure: resolv.conf files and the
resolver are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.pipeline import load_policy
from outguard.ruleset.reach import HostView, name_servers, reach_warnings

RULES = """version: 1
allow:
  - {name: web, to: [203.0.113.10], ports: [443], proto: tcp}
"""


@pytest.fixture
def view(tmp_path: Path) -> HostView:
    (tmp_path / "resolv.conf").write_text("# by hand\nnameserver 192.0.2.53\n"
                                          "nameserver 127.0.0.1\nnameserver 2001:db8::53\n")
    return HostView(resolv_conf=tmp_path / "resolv.conf",
                    resolved_conf=tmp_path / "resolved.conf",
                    shown="/etc/netns/web/resolv.conf",
                    resolve=lambda name: {"intel.example.com": ["198.51.100.40"]}.get(name, []))


def _warnings(text: str, view: HostView, tmp_path: Path) -> list[str]:
    policy = load_policy(tmp_path / "p.yaml", text=text)
    return [p.message for p in reach_warnings(policy, view)]


def test_an_enforcing_policy_that_blocks_the_hosts_name_servers_is_warned(
        view: HostView, tmp_path: Path) -> None:
    got = _warnings(RULES, view, tmp_path)
    assert len(got) == 1
    assert "name servers 192.0.2.53, 2001:db8::53 (/etc/netns/web/resolv.conf)" in got[0]
    assert '`- {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53]}`' in got[0]


@pytest.mark.parametrize("extra", [
    '  - {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53]}\n',
    "  - {name: all, to: [192.0.2.0/24, '2001:db8::/32']}\n",
])
def test_an_allow_rule_for_every_user_on_udp_and_tcp_covers_them(
        view: HostView, tmp_path: Path, extra: str) -> None:
    assert _warnings(RULES + extra, view, tmp_path) == []


@pytest.mark.parametrize("extra", [
    '  - {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53], proto: udp}\n',  # no tcp
    '  - {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53], for: {user: root}}\n',
])
def test_half_an_allow_is_not_enough(view: HostView, tmp_path: Path, extra: str) -> None:
    assert len(_warnings(RULES + extra, view, tmp_path)) == 1


def test_no_warning_with_dns_or_in_audit_mode(view: HostView, tmp_path: Path) -> None:
    with_dns = RULES + "dns: {upstreams: [192.0.2.53]}\n"
    assert _warnings(with_dns, view, tmp_path) == []
    assert _warnings(RULES.replace("version: 1\n", "version: 1\nmode: audit\n"), view,
                     tmp_path) == []


def test_a_systemd_resolved_stub_is_looked_through(view: HostView, tmp_path: Path) -> None:
    view.resolv_conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    assert name_servers(view) == ([], "/etc/netns/web/resolv.conf")
    view.resolved_conf.write_text("nameserver 198.51.100.53\n")
    assert name_servers(view) == (["198.51.100.53"], str(view.resolved_conf))


FEEDS = RULES + """  - {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53]}
deny:
  - {name: threats, to: ["@feed:corp-bad", "@feed:local-bad"]}
feeds:
  corp-bad: {url: "https://intel.example.com:8443/bad.txt"}
  local-bad: {file: bad.txt, may_be_empty: true}
"""


def test_a_url_feed_whose_host_the_policy_blocks_is_warned(view: HostView,
                                                           tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("")
    got = _warnings(FEEDS, view, tmp_path)
    assert len(got) == 1 and got[0].startswith(
        "feed corp-bad is downloaded from intel.example.com (port 8443/tcp), which this policy"
        " blocks (no allow rule lets out its addresses)")
    assert "`- {name: feed-corp-bad, to: [intel.example.com], ports: [8443], proto: tcp}`" \
        in got[0]
    # allowed by name, or (without dns:) by one of the addresses it resolves to
    by_name = FEEDS.replace("deny:", "  - {name: intel, to: [intel.example.com], ports: [8443]}"
                                     "\ndeny:")
    assert _warnings(by_name, view, tmp_path) == []
    by_address = FEEDS.replace("deny:", "  - {name: intel, to: [198.51.100.40], ports: [8443]}"
                                        "\ndeny:")
    assert _warnings(by_address, view, tmp_path) == []
    # with dns: only a name counts (outguard's resolver answers nothing else)
    dns = "dns: {upstreams: [192.0.2.53]}\n"
    got = _warnings(by_address + dns, view, tmp_path)
    assert len(got) == 1 and "(outguard's resolver refuses the name)" in got[0]
    assert _warnings(by_name + dns, view, tmp_path) == []


def test_a_registry_feed_is_warned_where_it_is_used(view: HostView, tmp_path: Path) -> None:
    text = RULES + ('  - {name: dns, to: [192.0.2.53, "2001:db8::53"], ports: [53]}\n'
                    "deny:\n  - {name: threats, to: ['@feed:spamhaus-drop']}\n")
    policy = load_policy(tmp_path / "p.yaml", text=text)
    got = reach_warnings(policy, view)
    assert [(w.path, w.line) for w in got] == [("deny[0].to[0]", 6)]
    assert "www.spamhaus.org does not resolve now and no allow rule names it" in got[0].message


def test_a_namespace_without_its_own_resolv_conf_is_said_to_read_the_hosts(
        tmp_path: Path) -> None:
    # `check --netns X` named /etc/netns/X/resolv.conf, a file that did not exist: `ip netns
    # exec` bind-mounts it only when it exists, and otherwise the namespace reads the host's
    assert HostView.of_netns("og-x", etc=tmp_path).shown == "/etc/resolv.conf"
    (tmp_path / "og-x").mkdir()
    (tmp_path / "og-x" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    assert HostView.of_netns("og-x", etc=tmp_path).shown == str(tmp_path / "og-x/resolv.conf")
    assert HostView.of_netns(None, etc=tmp_path).shown == "/etc/resolv.conf"


@pytest.mark.parametrize(("extra", "warned"), [
    ("", True),
    ("  - {name: root-web, to: [203.0.113.20], ports: [443], proto: tcp, for: {user: root}}\n",
     True),
    ("  - {name: proxy-out, to: [203.0.113.20], ports: [80, 443], proto: tcp,"
     " for: {user: nobody}}\n", False),
    ("  - {name: all-web, to: [203.0.113.20], ports: [80]}\n", False),
])
def test_a_proxy_whose_user_no_rule_lets_out_is_warned(
        extra: str, warned: bool, tmp_path: Path) -> None:
    # a newcomer's trial: every request through the proxy ended in a 502 after 20 s, and
    # `check` said nothing (the proxy connects as its own user, which the policy blocked)
    ok = HostView(resolv_conf=tmp_path / "none", resolved_conf=tmp_path / "none")
    text = ("version: 1\nproxy: {user: nobody}\nallow:\n"
            "  - {name: dns, to: [192.0.2.53], ports: [53]}\n" + extra)
    got = [m for m in _warnings(text, ok, tmp_path) if "proxy" in m]
    assert bool(got) == warned, got
    if warned:
        assert "only_egress: true" in got[0] and "for: {user: nobody}" in got[0]
    only = text.replace("{user: nobody}", "{user: nobody, only_egress: true}", 1)
    assert not [m for m in _warnings(only, ok, tmp_path) if "proxy" in m]
