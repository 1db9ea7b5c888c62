"""Issue 14, a hostile tester's findings in the policy layer: YAML alias bombs, list files that
are no files (or are someone's secrets), IPv4-mapped addresses, overlapping ports, odd comments."""

from __future__ import annotations

import os
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.feeds.policy import FEEDS
from outguard.nftables import nft_text, nft_tx
from outguard.nftables.nft import compile_ruleset
from outguard.policy import files, load
from outguard.policy.loaded import Policy
from outguard.policy.yamlpos import MAX_ALIAS_VALUES
from outguard.ruleset.lower import lower

# a policy's `@feed:` lists load as the pipeline loads them
load_policy = partial(load.load_policy, feeds=FEEDS)
load_text = partial(load.load_text, feeds=FEEDS)

ALLOW = "version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [443], proto: tcp}\n"


def problems_of(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_text(text, "p.yaml", base_dir=base_dir)
    return [str(p) for p in err.value.problems]


def warnings_of(policy: Policy) -> list[str]:
    return [str(w) for w in policy.warnings]


# --- YAML aliases -------------------------------------------------------------------------------

def laughs(levels: int, width: int = 10) -> str:
    lines = ["version: 1", f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_at_once() -> None:
    text = laughs(9)  # 10**9 values from ~900 bytes
    assert len(text) < 1000
    started = time.monotonic()
    (line,) = problems_of(text)
    assert time.monotonic() - started < 5
    assert line.startswith("p.yaml:2:")  # at the anchored values the aliases repeat
    assert line.endswith(f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values"
                         " (a 'billion laughs' document?): write the values out")


def test_a_million_laughs_is_refused_too() -> None:
    """Small enough that the loader before the bound finished it, with other errors."""
    (line,) = problems_of(laughs(6))
    assert "YAML aliases expand to more than" in line


def test_ordinary_aliases_still_work() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: &web [80, 443]}\n"
                       "  - {name: b, to: [203.0.113.2], ports: *web}\n", "p.yaml")
    assert [r.ports for r in policy.doc.allow] == [[(80, 80), (443, 443)]] * 2


# --- list files and policy files that are not what they seem ----------------------------------

def list_policy(file: str) -> str:
    return ALLOW.replace("203.0.113.1]", "203.0.113.1, '@l']") + f"lists:\n  l: {{file: '{file}'}}\n"


def test_a_list_file_that_is_a_device() -> None:
    (line,) = problems_of(list_policy("/dev/zero"))
    assert line == ("p.yaml:5:13: lists.l.file: cannot read list file '/dev/zero': not a regular"
                    " file (a character device)")


def test_a_list_file_that_is_a_directory(tmp_path: Path) -> None:
    (line,) = problems_of(list_policy(str(tmp_path)))
    assert line.endswith("not a regular file (a directory)") or line.endswith("Is a directory")


def test_a_list_file_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[list[str]] = []
    worker = threading.Thread(target=lambda: got.append(problems_of(list_policy(str(fifo)))),
                              daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("loading a policy whose list file is a FIFO hangs")
    assert got == [[f"p.yaml:5:13: lists.l.file: cannot read list file '{fifo}': not a regular"
                    " file (a FIFO)"]]


def test_a_list_file_over_the_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(files.MAX_LIST_BYTES + 1)
    (line,) = problems_of(list_policy(str(big)))
    assert line.endswith("cannot read list file"
                         f" '{big}': {files.MAX_LIST_BYTES + 1:,} bytes is more than the 256 MiB"
                         " allowed".replace(f"{files.MAX_LIST_BYTES + 1:,} bytes", "256 MiB"))


def test_the_lines_of_a_file_that_is_no_list_are_never_shown(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$s3cr3tSalt$s3cr3tHash:19000:0:99999:7:::\n"
                      "daemon:*:19000:0:99999:7:::\nbob:$y$j9T$an0therS3cret:19001::::::\n")
    lines = problems_of(list_policy(str(shadow)))
    assert lines == [f"{shadow}:{n}:1: lists.l: not an IP address, network or host name"
                     for n in (1, 2, 3)]
    assert not any("s3cr3t" in line or "daemon" in line or "S3cret" in line for line in lines)
    with open(shadow, "a") as f:  # longer, and nothing in it is a list entry: said once
        f.write("".join(f"user{i}:$y$j9T$s3cr3t{i}:19001::::::\n" for i in range(30)))
    assert problems_of(list_policy(str(shadow))) == [
        f"p.yaml:5:13: lists.l.file: '{shadow}' is not a list file: none of its 33 lines is an"
        " IP address, network or host name"]


def test_a_policy_file_that_is_a_device_or_fifo(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy("/dev/zero")
    assert str(err.value) == "/dev/zero:1:1: cannot read policy: not a regular file (a character" \
        " device)"
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as err:
        load_policy(fifo)
    assert str(err.value).endswith("not a regular file (a FIFO)")


def test_a_policy_file_over_the_cap(tmp_path: Path) -> None:
    big = tmp_path / "p.yaml"
    with open(big, "wb") as f:
        f.truncate(files.MAX_POLICY_BYTES + 1)
    with pytest.raises(PolicyError) as err:
        load_policy(big)
    assert str(err.value).endswith("cannot read policy: 16 MiB is more than the 16 MiB allowed")


# --- IPv4-mapped IPv6 addresses ---------------------------------------------------------------

def test_a_deny_of_an_ipv4_mapped_address_denies_the_ipv4_address() -> None:
    policy = load_text("version: 1\ndeny:\n  - {name: d, to: ['::ffff:203.0.113.10',"
                       " '::ffff:198.51.100.0/120']}\n" + ALLOW[len("version: 1\n"):], "p.yaml")
    assert [t.value for t in policy.doc.deny[0].to or []] == ["203.0.113.10", "198.51.100.0/24"]
    assert warnings_of(policy) == [
        "p.yaml:3:20: deny[0].to[0]: '::ffff:203.0.113.10' is an IPv4-mapped IPv6 address: it is"
        " read as 203.0.113.10 (such connections leave as IPv4 packets); write it so",
        "p.yaml:3:43: deny[0].to[1]: '::ffff:198.51.100.0/120' is an IPv4-mapped IPv6 address: it"
        " is read as 198.51.100.0/24 (such connections leave as IPv4 packets); write it so"]
    text = nft_text.script(nft_tx.full(compile_ruleset(lower(policy))))
    assert "203.0.113.10" in text and "ffff" not in text


def test_ipv4_mapped_entries_of_lists(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("::ffff:192.0.2.7\n192.0.2.8\n::FFFF:192.0.2.9\n")
    policy = load_text("version: 1\nmode: audit\ndeny:\n  - {name: d, to: ['@f', '@i']}\nlists:\n"
                       "  f: {file: l.txt}\n  i: ['::ffff:192.0.2.10']\n", "p.yaml",
                       base_dir=tmp_path)
    assert [t.value for t in policy.lists["f"].targets] == ["192.0.2.7", "192.0.2.8", "192.0.2.9"]
    assert [t.value for t in policy.lists["i"].targets] == ["192.0.2.10"]
    assert warnings_of(policy) == [
        "p.yaml:7:7: lists.i[0]: '::ffff:192.0.2.10' is an IPv4-mapped IPv6 address: it is read as"
        " 192.0.2.10 (such connections leave as IPv4 packets); write it so",
        f"{tmp_path / 'l.txt'}:1:1: lists.f: 2 IPv4-mapped IPv6 address(es) (::ffff:a.b.c.d) read"
        " as the IPv4 addresses they stand for"]


# --- overlapping ports ------------------------------------------------------------------------

def test_overlapping_ports_are_merged_with_a_warning() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], proto: tcp,"
                       " ports: [443, '1-1024', 8080, 8080, '8000-8100']}\n", "p.yaml")
    assert policy.doc.allow[0].ports == [(1, 1024), (8000, 8100)]
    assert warnings_of(policy) == [
        "p.yaml:3:53: allow[0].ports: ports 1-1024 and 443, 8000-8100 and 8080 overlap; merged"
        " into 1-1024, 8000-8100"]
    text = nft_text.script(nft_tx.full(compile_ruleset(lower(policy))))
    assert "tcp dport { 1-1024, 8000-8100 }" in text or "{ 1-1024, 8000-8100 }" in text


def test_ports_that_only_touch_are_kept_as_written() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [80, 81,"
                       " '82-90']}\n", "p.yaml")
    assert policy.doc.allow[0].ports == [(80, 80), (81, 81), (82, 90)]
    assert policy.warnings == []


# --- comments ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("comment", "named"), [
    ("\\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("\\u200b", "U+200B (ZERO WIDTH SPACE)"),
    ("\\u2028", "U+2028 (LINE SEPARATOR)"),
    ("\\t", "U+0009 (unnamed)"),
    ("\\x1b[31m", "U+001B (unnamed)"),
])
def test_comments_that_hide_or_break_text_are_refused(comment: str, named: str) -> None:
    (line,) = problems_of(f'version: 1\nallow:\n  - {{name: a, comment: "x{comment}y"}}\n')
    assert line == (f"p.yaml:3:24: allow[0].comment: a comment cannot hold {named}: control,"
                    " format and line-break characters and '\"' are refused")


def test_comments_in_any_script_are_fine() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [1],"
                       " comment: 'Zugang für die API — 接口 😀 \\\\ ; # {x}'}\n", "p.yaml")
    assert policy.doc.allow[0].comment == "Zugang für die API — 接口 😀 \\\\ ; # {x}"


def test_a_file_feed_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    text = (f"version: 1\nmode: audit\ndeny:\n  - {{name: d, to: ['@feed:local']}}\n"
            f"feeds:\n  local: {{file: '{fifo}'}}\n")
    got: list[list[str]] = []
    worker = threading.Thread(target=lambda: got.append(problems_of(text)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(fifo, "w"):
            pass
        pytest.fail("loading a policy whose file: feed is a FIFO hangs")
    assert got == [[f"p.yaml:4:20: deny[0].to[0]: feed local: {fifo} is a FIFO, not a regular"
                    " file"]]
