"""The `proxy:` section: defaults, and what `check` refuses, with the path named."""

from __future__ import annotations

import pytest

from outguard.errors import PolicyError
from outguard.policy.load import load_text
from outguard.policy.proxyconf import DEFAULT_LISTEN, listen_endpoints


def test_defaults() -> None:
    proxy = load_text("version: 1\nproxy: {}\n").doc.proxy
    assert proxy is not None and tuple(proxy.listen) == DEFAULT_LISTEN
    assert listen_endpoints(proxy) == [("127.0.0.1", 3128), ("::1", 3128)]
    assert proxy.user == "outguard-proxy" and proxy.limits.header_bytes == 16384


@pytest.mark.parametrize(("section", "path", "words"), [
    ("{listen: ['0.0.0.0:3128']}", "proxy.listen", "not on every address"),
    ("{listen: ['[::]:3128']}", "proxy.listen", "not on every address"),
    ("{listen: ['127.0.0.1:3128', '127.0.0.1:3128']}", "proxy.listen", "listed twice"),
    ("{listen: ['127.0.0.1:99999']}", "proxy.listen", "1-65535"),
    ("{listen: []}", "proxy.listen", "at least 1"),
    ("{user: root}", "proxy.user", "root"),
    ("{user: 0}", "proxy.user", "root"),
    ("{user: no-such-user-og18}", "proxy.user", "no user 'no-such-user-og18' on this machine"),
    ("{only_egress: maybe}", "proxy.only_egress", "expected true or false"),
    ("{transparent: [8080]}", "proxy.transparent", "80 (HTTP) and 443 (TLS) only"),
    ("{transparent: [443, 443]}", "proxy.transparent", "listed twice"),
    ("{transparent: [80], transparent_port: 3128}", "proxy", "a `listen` port too"),
    ("{transparent_port: 0}", "proxy.transparent_port", "1"),
    ("{limits: {header_bytes: 10}}", "proxy.limits.header_bytes", "1024"),
    ("{limits: {idle_timeout: 0}}", "proxy.limits.idle_timeout", "not above 0"),
    ("{limits: {conections: 5}}", "proxy.limits.conections", ""),
    ("{listn: ['127.0.0.1:3128']}", "proxy.listn", ""),
])
def test_check_refuses(section: str, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(f"version: 1\nproxy: {section}\n", "p.yaml")
    text = str(caught.value)
    assert "p.yaml:2:" in text and path in text and words in text, text


def test_check_warns_about_rules_the_proxy_needs_a_process_for() -> None:
    text = """version: 1
allow:
  - {name: a, to: [203.0.113.1]}
  - {name: b, to: [203.0.113.2], for: {user: nobody}}
  - {name: c, to: [203.0.113.3], for: {unit: nginx.service}}
proxy: {}
"""
    warnings = load_text(text, "p.yaml").warnings
    about = [w for w in warnings if "proxy:unattributed" in w.message]
    assert [(w.path, w.line) for w in about] == [("allow[2].for", 5)]
    without = load_text(text.replace("proxy: {}\n", ""), "p.yaml").warnings
    assert not [w for w in without if "proxy:unattributed" in w.message]
