"""The iptables export: golden files for every shared example policy, the fidelity report, and
the pieces that must hold whatever the policy says (multiport limits, /0 in ipsets, the 2038 end
of the time match, hostile names and comments).

Goldens: tests/export/golden/iptables/<policy>/ holds the three files and `fidelity.txt`;
`OUTGUARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/export/test_iptables.py` rewrites them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.export.iptables import FILES, export, render
from outguard.ruleset.ir import Elements, IRRule, Match, Source
from tests.export.cloud_inputs import GOLDEN_DIR, check_golden, policy_names, ruleset, ruleset_of

GOLDEN = GOLDEN_DIR / "iptables"


SCRIPTS = ("deploy.sh", "remove.sh")  # the same for every policy but its digest: one golden


@pytest.mark.parametrize("name", policy_names())
def test_golden(name: str) -> None:
    result = export(ruleset(name))
    assert list(result.files) == list(FILES)
    (GOLDEN / name).mkdir(parents=True, exist_ok=True)
    for file, content in result.files.items():
        if file not in SCRIPTS or name == "cases":
            check_golden(GOLDEN / name / file, content)
    check_golden(GOLDEN / name / "fidelity.txt", result.report() + "\n")
    digest = ruleset(name).policy_digest[:12]
    for script in SCRIPTS:
        assert result.files[script].count(digest) >= 1
        assert result.files[script].replace(digest, "D") == \
            export(ruleset("cases")).files[script].replace(ruleset("cases").policy_digest[:12], "D")


def test_every_policy_has_goldens_and_no_stray_ones() -> None:
    assert {p.name for p in GOLDEN.iterdir() if p.is_dir()} == set(policy_names())


def test_case_policy_report_is_exact_but_for_the_2099_expiries() -> None:
    report = {f.rule: f for f in export(ruleset("cases")).fidelity}
    inexact = {k for k, f in report.items() if f.level != "exact"}
    assert inexact == {"deny:temp-block", "allow:temp-allow"}
    assert "2038" in report["deny:temp-block"].how
    assert report["default"].level == "exact"


def test_wildcard_only_rule_is_dropped_with_the_reason() -> None:
    report = {f.rule: f for f in export(ruleset("cloud-fqdn")).fidelity}
    assert report["allow:cdn"].level == "dropped"
    assert "DNS resolver" in report["allow:cdn"].how
    assert report["allow:mirror"].level == "approximated"
    assert "mirror.example.test → 203.0.113.20 2001:db8:1::20" in report["allow:mirror"].how


POLICY = """\
version: 1
allow:
  - name: many
    to: [203.0.113.10]
    ports: {ports}
    proto: {proto}
{extra}"""


def _v4_rules(text: str) -> list[str]:
    return [ln for ln in render(ruleset_of(text)).v4.splitlines() if "og:allow:many" in ln]


def test_multiport_takes_at_most_15_slots_per_rule() -> None:
    ports: list[int | str] = [*range(1, 14), "100-200", 14, 15]  # 13 + 2 slots, then 2
    rules = _v4_rules(POLICY.format(ports=ports, proto="tcp", extra=""))
    found = [re.search(r"--dports? (\S+)", r) for r in rules]
    assert [m.group(1) for m in found if m] == ["1,2,3,4,5,6,7,8,9,10,11,12,13,100:200", "14,15"]
    ports = [*range(1, 15), "100-200"]  # 14 slots: the range does not fit any more
    rules = _v4_rules(POLICY.format(ports=ports, proto="tcp", extra=""))
    assert [r.split(" -m comment")[0].rsplit(" ", 1)[1] for r in rules] == [
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14", "100:200"]


def test_any_protocol_with_ports_is_tcp_and_udp() -> None:
    rules = _v4_rules(POLICY.format(ports=[53], proto="any", extra=""))
    assert [r.split(" -d 203.0.113.10 ")[1].split(" -m comment")[0] for r in rules] == [
        "-p tcp --dport 53", "-p udp --dport 53"]


def test_expiry_before_2038_is_a_time_match_one_second_early() -> None:
    text = POLICY.format(ports=[443], proto="tcp", extra="    expires: 2030-01-01T00:00:00Z\n")
    [rule] = _v4_rules(text)
    assert "-m time --datestop 2029-12-31T23:59:59" in rule
    assert export(ruleset_of(text)).exact


def test_everything_prefix_in_an_ipset_is_split_in_halves() -> None:
    many = [f"203.0.113.{i}" for i in range(1, 10)] + ["0.0.0.0/0", "::/0"]
    text = f"version: 1\ndeny:\n  - name: all\n    to: {many}\n".replace("'", '"')
    sets = render(ruleset_of(text)).ipset
    assert "0.0.0.0/0" not in sets
    assert "add og-all-b9f55f00-4 0.0.0.0/1\n" in sets and "128.0.0.0/1\n" in sets


# --- hostile values --------------------------------------------------------------------------

HOSTILE = 'x" -j ACCEPT\nCOMMIT\n*nat\n-A OUTPUT -j ACCEPT #'


def _hostile_ruleset():  # type: ignore[no-untyped-def]
    rs = ruleset_of("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n")
    [rule] = rs.allow
    inline = rule.inline
    assert inline is not None
    source = rs.sources[inline]
    evil_rule = replace(rule, name=HOSTILE, comment=HOSTILE)
    deny = IRRule("deny", 0, HOSTILE, Match(), "rule:deny:evil", (), False, comment=HOSTILE)
    elements = Elements(("198.51.100.1",))
    rs.sources["rule:deny:evil"] = Source("rule:deny:evil", elements.digest(), lambda: elements)
    return replace(rs, allow=(evil_rule,), deny=(deny,)), source


def test_hostile_names_and_comments_cannot_add_lines_or_end_quotes() -> None:
    rs, _source = _hostile_ruleset()
    result = export(rs)
    for name in ("rules.v4", "rules.v6"):
        lines = result.files[name].splitlines()
        assert lines.count("COMMIT") == 1 and lines.count("*filter") == 1
        assert not any(ln.startswith("*nat") for ln in lines)
        for ln in lines:
            assert ln.startswith(("#", "*filter", ":OUTGUARD-", "-A OUTGUARD-", "-I OUTPUT 1 -j",
                                  "COMMIT")), ln
            assert ln.count('"') % 2 == 0, ln
            if ln.startswith("-A"):
                assert "ACCEPT" not in re.sub(r'"[^"]*"', "", ln), ln
    assert any(f.rule.startswith("allow:x_") and "written as" in f.how for f in result.fidelity)


def test_an_address_that_is_not_one_is_refused_not_written() -> None:
    from outguard.export.common import ExportError

    rs = ruleset_of("version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n")
    bad = Elements(("203.0.113.10 -j ACCEPT",))
    key = rs.allow[0].inline
    assert key is not None
    rs.sources[key] = Source(key, bad.digest(), lambda: bad)
    with pytest.raises(ExportError, match="allow:web"):
        export(rs)


def test_time_limit_constant_is_what_xt_time_holds() -> None:
    from outguard.export.iptables import TIME_MAX

    assert datetime.fromtimestamp(2**31 - 1, UTC) == TIME_MAX


# --- the CLI: compile --target, the report on stderr, --strict ---------------------------------


def test_cli_compile_target_prints_files_and_report(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outguard.cli.main import cli

    path = tmp_path / "p.yaml"
    path.write_text(EXACT)
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "iptables", "--strict"])
    assert result.exit_code == 0, result.output
    assert "# ==> rules.v4 <==" in result.stdout
    assert "exact        allow:web" in result.stderr
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "iptables", "--out",
                                      str(out)])
    assert result.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_cli_strict_fails_on_anything_not_exact(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outguard.cli.main import cli

    path = tmp_path / "p.yaml"
    path.write_text(EXACT + "    expires: 2099-01-01T00:00:00Z\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "iptables", "--strict",
                                      "--out", str(out)])
    assert result.exit_code == 1
    assert "approximated allow:web" in result.stderr and "--strict" in result.stderr
    assert not out.exists()
    result = CliRunner().invoke(cli, ["compile", str(path), "--target", "nosuch"])
    assert result.exit_code == 1 and "unknown export target 'nosuch'" in result.stderr


EXACT = "version: 1\nallow:\n  - name: web\n    to: [203.0.113.10]\n    ports: [443]\n    proto: tcp\n"


@pytest.mark.parametrize(("mode", "action", "tail"), [("enforce", "drop", ""),
                                                      ("enforce", "reject", " reject"),
                                                      ("audit", "drop", " audit")])
def test_log_lines_are_limited_per_flow_and_name_the_action(mode: str, action: str,
                                                            tail: str) -> None:
    """Issue 17 §8: one `-m limit` per rule (a loud flow hid every other), and prefixes without
    the ` reject` / ` audit` the monitor reads (`compile.nft_verdict.log_prefix`)."""
    from tests.cases import variant_policy

    rendered = render(ruleset_of(variant_policy(mode, action)))  # type: ignore[arg-type]
    for text in (rendered.v4, rendered.v6):
        logs = [ln for ln in text.splitlines() if "-j NFLOG" in ln]
        assert logs and all("-m hashlimit --hashlimit-upto 1000/second" in ln
                            and "--hashlimit-mode dstip,dstport --hashlimit-name og-log" in ln
                            for ln in logs)
        assert "-m limit" not in text
        prefixes = {re.search(r'--nflog-prefix "([^"]+)"', ln).group(1) for ln in logs}  # type: ignore[union-attr]
        assert f"og:default{tail}" in prefixes and f"og:deny:attacker-net{tail}" in prefixes
        assert all(p.endswith(tail) for p in prefixes)
