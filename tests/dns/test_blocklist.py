"""dns.blocklist: hosts-file and plain lists of names, the odd lines skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.dns.blocklist import BlocklistError, load_blocklists, parse_blocklist


def test_parse_blocklist_formats() -> None:
    text = """# hosts format
0.0.0.0 ads.example.test tracker.example.test
127.0.0.1 localhost
::1 ip6-localhost
:: v6.example.test
192.0.2.9 Bad.Example.TEST  # comment
plain.example.test
*.wild.example.test
||abp.example.test^
198.51.100.3
"""
    assert list(parse_blocklist(text)) == [
        "ads.example.test", "tracker.example.test", "v6.example.test", "bad.example.test",
        "plain.example.test", "wild.example.test", "abp.example.test"]


def test_load_blocklists_keeps_the_first_file_of_a_name(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ads.example.test\n")
    (tmp_path / "b.txt").write_text("0.0.0.0 ads.example.test more.example.test\n")
    got = load_blocklists([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert got == {"ads.example.test": str(tmp_path / "a.txt"),
                   "more.example.test": str(tmp_path / "b.txt")}
    with pytest.raises(BlocklistError, match="cannot read DNS blocklist"):
        load_blocklists([str(tmp_path / "missing.txt")])
