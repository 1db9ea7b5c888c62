"""Host names in exports, with and without `dns:` (issue 14: exporters dropped every name rule
of a policy with `dns:`, "→ nothing", and exited 0).

With `dns:`, `lower` resolves no name (outguard's resolver fills kernel sets at run time), so
`export.names.for_export` resolves them at export time: the rule's own names and those inside
its lists' entries. Every target, for every rule of `policies/cloud-dns.yaml`, must either
carry each name's export-time addresses or the name itself (its native name form), and say
so in the fidelity report; a name that does not resolve is reported; `--strict` fails.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.export.names import for_export, rule_names
from outguard.export.targets import export, names
from outguard.feeds.policy import FEEDS
from outguard.policy import load
from tests.export.cloud_inputs import POLICY_DIR, resolver, ruleset

# a policy's `@feed:` lists load as the pipeline loads them
load_policy = partial(load.load_policy, feeds=FEEDS)
load_text = partial(load.load_text, feeds=FEEDS)

DNS_POLICY = POLICY_DIR / "cloud-dns.yaml"


def test_with_dns_every_name_of_rules_and_lists_is_resolved_at_export_time() -> None:
    rs = ruleset("cloud-dns")
    assert rs.dns is not None
    by_key = {r.counter: r for r in rs.rules()}
    api = rs.sources[by_key["allow:api"].inline or ""].elements
    assert api.v4 == ("203.0.113.30",) and api.v6 == ("2001:db8:1::30",)
    partners = rs.sources["list:partners"].elements
    assert set(partners.v4) == {"192.0.2.41", "192.0.2.40"}  # the list's address and its name's
    info = rule_names(rs, by_key["allow:partners"])
    assert info.names == ("partner.example.test",) and info.wildcards == ("*.cdn.example.test",)
    assert rule_names(rs, by_key["allow:not-yet"]).unresolved == ("gone.example.test",)


def test_names_lower_resolved_are_not_asked_again() -> None:
    asked: list[str] = []

    def counting(name: str) -> list[str]:
        asked.append(name)
        return resolver(name)

    text = "version: 1\nallow:\n  - {name: a, to: [api.example.test, '@l']}\n" \
           "lists:\n  l: [mirror.example.test]\n"
    rs = for_export(load_text(text), resolver=counting)
    assert sorted(asked) == ["api.example.test", "mirror.example.test"]
    assert rs.list_names == {"list:l": ("mirror.example.test",)}


@pytest.mark.parametrize("target", names())
def test_no_name_disappears_silently(target: str) -> None:
    rs = ruleset("cloud-dns")
    result = export(target, rs)
    text = "\n".join(result.files.values())
    report = {f.rule: f for f in result.fidelity}
    for rule in rs.rules():
        info = rule_names(rs, rule)
        how = report[rule.counter].how
        assert report[rule.counter].level != "exact", rule.counter
        for name in info.resolved:
            assert name in how, (target, rule.counter, name)
            addresses = rs.resolved[name]
            assert any(a in text for a in addresses), (target, rule.counter, name)
            assert "export time" in how and "stale" in how
        for name in info.unresolved + info.wildcards:
            assert name in how or name.removeprefix("*") in text, (target, rule.counter, name)
        if report[rule.counter].level == "dropped":
            assert any(n in how for n in info.fqdns), (target, rule.counter, how)


def test_feed_names_are_reported_not_resolved(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("bad1.example.test\nbad2.example.test\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\ndeny:\n  - {name: feeds, to: ['@feed:local-bad', 198.51.100.7]}\n"
        "feeds:\n  local-bad: {file: bad.txt, format: domains}\n"
        "dns: {listen: '127.0.0.1:53', upstreams: ['192.0.2.53']}\n")

    def refuse(name: str) -> list[str]:
        raise AssertionError(f"asked to resolve {name}")

    rs = for_export(load_policy(tmp_path / "p.yaml"), resolver=refuse)
    for target in names():
        [feeds] = [f for f in export(target, rs).fidelity if f.rule == "deny:feeds"]
        assert "the 2 host names of @feed:local-bad are not exported" in feeds.how, target


POLICY = """\
version: 1
allow:
  - name: local-api
    to: [localhost]
    ports: [8080]
    proto: tcp
{dns}"""
DNS = "dns: {listen: '127.0.0.1:53', upstreams: ['192.0.2.53']}\n"


@pytest.mark.parametrize("dns", ["", DNS], ids=["without-dns", "with-dns"])
def test_cli_export_resolves_names_with_and_without_dns(tmp_path: Path, dns: str) -> None:
    """Through the CLI and the system resolver (`localhost` resolves everywhere)."""
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(dns=dns))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "iptables", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "-d 127.0.0.1 -p tcp --dport 8080" in (out / "rules.v4").read_text()
    assert "approximated allow:local-api — host names resolved at export time" in result.stderr
    assert "nothing" not in result.stderr
    assert (out / "deploy.sh").stat().st_mode & 0o777 == 0o755
    strict = CliRunner().invoke(cli, ["compile", str(path), "--target", "k8s", "--strict"])
    assert strict.exit_code == 1 and "not exact" in strict.stderr


def test_cli_a_name_that_does_not_resolve_is_reported_with_dns(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(dns=DNS).replace("localhost", "no-such-name.invalid"))
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "ufw"])
    assert result.exit_code == 0
    assert "dropped      allow:local-api — host names that did not resolve at export time" \
           " (no-such-name.invalid): left out" in result.stderr
    strict = CliRunner().invoke(cli, ["compile", str(path), "--target", "ufw", "--strict"])
    assert strict.exit_code == 1
