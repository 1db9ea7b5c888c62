"""Parsers against the real feed files (counts from shared/feeds/SOURCES.md) and bad lines."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from outguard.feeds.parse import parse

# file, format, data lines (SOURCES.md "Data lines"), IPv6 entries
REAL = [
    ("firehol_level1.netset", "plain", 6273, 0),
    ("spamhaus_drop.netset", "plain", 683, 0),
    ("spamhaus_edrop.netset", "plain", 63, 0),
    ("feodo.ipset", "plain", 235, 0),
    ("et_compromised.ipset", "plain", 2191, 0),
    ("dshield.netset", "plain", 20, 0),
    ("spamhaus_drop.txt", "plain", 936, 0),
    ("spamhaus_drop_2026-08-22.txt", "plain", 1699, 0),
    ("spamhaus_dropv6.txt", "plain", 78, 78),
    ("spamhaus_drop.json", "spamhaus-json", 1406, 0),
    ("feodo_ipblocklist.csv", "feodo-csv", 28, 0),
    ("feodo_ipblocklist_recommended.txt", "plain", 244, 0),
    ("urlhaus_hostfile.txt", "hosts", 869, 0),
    ("et_compromised-ips.txt", "plain", 539, 0),
    ("dshield_block.txt", "dshield", 20, 0),
]


@pytest.mark.parametrize(("name", "fmt", "lines", "v6"), REAL)
def test_real_feed_counts(shared_feeds: Path, name: str, fmt: str, lines: int, v6: int) -> None:
    parsed = parse((shared_feeds / name).read_bytes(), fmt)
    assert parsed.bad == 0, parsed.samples
    assert parsed.entries == lines
    assert len(parsed.a6) + len(parsed.n6) == v6


def test_values_match_ipaddress(shared_feeds: Path) -> None:
    text = (shared_feeds / "spamhaus_drop.txt").read_text()
    expected = [ipaddress.ip_network(line.split(";")[0].strip())
                for line in text.splitlines() if line and not line.startswith(";")]
    parsed = parse(text.encode(), "plain")
    v4 = parsed.v4()
    got = [ipaddress.ip_network((v, n)) for v, n in v4.net_list()] + \
          [ipaddress.ip_network(v) for v in v4.singles.tolist()]
    assert sorted(got) == sorted(expected)


def test_feodo_csv_and_dshield_pick_the_right_column(shared_feeds: Path) -> None:
    csv = parse((shared_feeds / "feodo_ipblocklist.csv").read_bytes(), "feodo-csv")
    first_row = next(line for line in (shared_feeds / "feodo_ipblocklist.csv").read_text().splitlines()
                     if line.startswith('"20'))
    assert int(ipaddress.ip_address(first_row.split(",")[1].strip('"'))) == csv.a4[0]
    dshield = parse((shared_feeds / "dshield_block.txt").read_bytes(), "dshield")
    assert all(n == 24 for _v, n in dshield.n4)


def test_hosts_gives_names(shared_feeds: Path) -> None:
    parsed = parse((shared_feeds / "urlhaus_hostfile.txt").read_bytes(), "hosts")
    assert not parsed.a4 and all("." in d and d == d.lower() for d in parsed.domains)


@pytest.mark.parametrize(("fmt", "text", "good", "bad"), [
    ("plain", "1.2.3.4\nnot-an-ip\n10.0.0.0/33\n5.6.7.0/24 ; SBL1\n2001:db8::/48 # c\n", 3, 2),
    ("plain", "# only comments\n; and these\n\n", 0, 0),
    ("spamhaus-json", '{"cidr":"1.2.3.0/24"}\n{oops\n[1]\n{"sblid":"x"}\n{"type":"metadata"}\n', 1, 3),
    ("feodo-csv",
     '"first_seen_utc","dst_ip","dst_port"\n"2024","1.2.3.4","443"\n"2024"\n"x","nope","1"\n', 1, 2),
    ("hosts", "127.0.0.1\tevil.example\n127.0.0.1\n127.0.0.1 localhost\n0.0.0.0 -bad-\n", 1, 2),
    ("dshield", "Start\tEnd\tNetblock\n1.2.3.0\t1.2.3.255\t24\t5\nx\ty\n", 1, 1),
    ("domains", "good.example\nBAD_NAME!\n", 1, 1),
])
def test_bad_lines_are_counted_never_fatal(fmt: str, text: str, good: int, bad: int) -> None:
    parsed = parse(text.encode(), fmt)
    assert (parsed.entries, parsed.bad) == (good, bad)
    assert len(parsed.samples) == bad and all(line > 0 for line, _t, _w in parsed.samples)


@pytest.mark.parametrize("fmt", ["plain", "spamhaus-json", "dshield"])
def test_host_bits_refuse_the_entry_by_line_number(fmt: str) -> None:
    """`1.0.0.0/7` was read as 0.0.0.0/7 (and `1.2.3.4/24` as 1.2.3.0/24) without a word: which
    network was meant is a guess, so the entry is a bad line, reported with its number."""
    lines = {"plain": ["# list", "198.51.100.1", "1.0.0.0/7", "203.0.113.0/24", "1.2.3.4/24",
                       "2001:db8::1/32"],
             "spamhaus-json": ['{"cidr": "198.51.100.1/32"}', '{"cidr": "1.0.0.0/7"}',
                               '{"cidr": "203.0.113.0/24"}', '{"cidr": "1.2.3.4/24"}',
                               '{"cidr": "2001:db8::1/32"}'],
             "dshield": ["198.51.100.1\t198.51.100.1\t32", "1.0.0.0\t1.255.255.255\t7",
                         "203.0.113.0\t203.0.113.255\t24", "1.2.3.4\t1.2.3.255\t24",
                         "2001:db8::1\t2001:db8::ffff\t32"]}[fmt]
    parsed = parse("\n".join(lines).encode(), fmt)
    first = 3 if fmt == "plain" else 2
    assert parsed.bad == 3
    assert [line for line, _t, _w in parsed.samples] == [first, first + 2, first + 3]
    assert "host bits set" in parsed.samples[0][2] and "0.0.0.0/7" in parsed.samples[0][2]
    v4 = parsed.v4()
    assert v4.net_list() == [(int(ipaddress.ip_address("203.0.113.0")), 24)]
    assert v4.singles.tolist() == [int(ipaddress.ip_address("198.51.100.1"))]
    assert not parsed.n6
