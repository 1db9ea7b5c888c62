"""`outguard dns log [--blocked] [--json]` and `outguard dns serve`'s refusals, through click's
CliRunner (the resolver itself runs in tests/kernel/test_dns.py, via the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.dns.events import DnsEvent, JsonlEvents

EVENTS = [
    DnsEvent(time=1700000000.0, client="127.0.0.1:40000", qname="api.example.test", qtype="A",
             action="resolved", rule="api", reason="allow api", rcode="NOERROR",
             addresses=["198.51.100.7"]),
    DnsEvent(time=1700000001.0, client="127.0.0.1:40001", qname="evil.example.test", qtype="A",
             action="blocked", rule="default", reason="no rule allows it", rcode="REFUSED",
             pid=4242, exe="/usr/bin/java", uid=1000, cmdline=["java", "-jar", "app.jar"],
             classifications=["java-unknown-name: a Java process resolving a name no rule"
                              " allows (JNDI / Log4Shell callback?)"]),
    DnsEvent(time=1700000002.0, client="[::1]:40002/tcp", qname="ads.example.test",
             qtype="AAAA", action="blocklisted", rule="blocklist", reason="in ads.txt",
             rcode="NXDOMAIN"),
]


def _state(tmp_path: Path) -> Path:
    sink = JsonlEvents(tmp_path)
    for e in EVENTS:
        sink.append(e)
    sink.close()
    with (tmp_path / "dns-events.jsonl").open("a") as fh:
        fh.write('{"time": 1700000003.0, "qname": "cut-sh')  # a line cut short by a crash
    return tmp_path


def test_dns_log_lists_every_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dns", "log", "--state-dir", str(_state(tmp_path))])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 4  # three events, one classification line
    assert "resolved" in lines[0] and "api.example.test A NOERROR [api]" in lines[0]
    assert lines[0].endswith("→ 198.51.100.7")
    assert "blocked" in lines[1] and "evil.example.test" in lines[1]
    assert "pid 4242 /usr/bin/java" in lines[1]
    assert lines[2].strip().startswith("! java-unknown-name")
    assert "ads.example.test AAAA NXDOMAIN [blocklist] from [::1]:40002/tcp" in lines[3]


def test_dns_log_blocked_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dns", "log", "--blocked", "--json", "--state-dir",
                                      str(_state(tmp_path))])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.output.splitlines()]
    assert [(e["qname"], e["action"]) for e in got] == [("evil.example.test", "blocked"),
                                                        ("ads.example.test", "blocklisted")]
    assert got[0]["cmdline"] == ["java", "-jar", "app.jar"] and got[0]["pid"] == 4242


def test_dns_log_without_events_prints_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dns", "log", "--blocked", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and result.output == ""


def test_dns_serve_refuses_a_policy_without_dns(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - name: a\n    to: [203.0.113.1]\n")
    result = CliRunner().invoke(cli, ["dns", "serve", str(policy), "--state-dir",
                                      str(tmp_path / "s")])
    assert result.exit_code == 2 and "has no 'dns:' section" in result.output


def test_dns_serve_names_where_a_bad_policy_is_wrong(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text('version: 1\ndns: {upstreams: ["not-an-ip"]}\n')
    result = CliRunner().invoke(cli, ["dns", "serve", str(policy), "--state-dir",
                                      str(tmp_path / "s")])
    assert result.exit_code != 0 and "not-an-ip" in result.output
    assert "p.yaml" in result.output


def test_dns_commands_refuse_a_namespace_outside_etc_netns() -> None:
    for args in (["install"], ["uninstall"], ["log"], ["serve", "/nonexistent.yaml"]):
        result = CliRunner().invoke(cli, ["dns", *args, "--netns", "../.."])
        assert result.exit_code == 2, args
        assert "invalid network namespace name '../..'" in result.output, args


def test_dns_install_refuses_a_listen_address_that_injects_lines() -> None:
    for listen in ("[fe80::1%x\nnameserver 203.0.113.66]:53", "[::ffff:0.0.0.0]:53",
                   "127.0.0.1\nnameserver 203.0.113.66"):
        result = CliRunner().invoke(cli, ["dns", "install", "--listen", listen, "--netns",
                                          "ogdns-never-made"])
        assert result.exit_code == 1 and "--listen" in result.output, listen
    assert not Path("/etc/netns/ogdns-never-made").exists()


def test_the_state_dir_default_names_the_netns_variant() -> None:
    for command in ("serve", "log"):
        result = CliRunner().invoke(cli, ["dns", command, "--help"], terminal_width=200)
        assert "/var/lib/outguard/netns/NAME with --netns" in result.output, result.output
