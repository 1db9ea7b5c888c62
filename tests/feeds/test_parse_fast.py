"""The numpy plain reader gives exactly what the line-by-line reader gives, for any body."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.feeds import parse_fast
from outguard.feeds.parse import Parsed, _plain_line, parse_plain_bytes


def line_by_line(data: bytes) -> Parsed:
    out = Parsed()
    for number, raw in enumerate(data.replace(b"\r", b"").split(b"\n"), 1):
        _plain_line(out, raw.decode("utf-8", errors="replace"), number)
    return out


def same(data: bytes) -> None:
    got, want = parse_plain_bytes(data), line_by_line(data)
    got4, want4 = got.v4(), want.v4()
    assert sorted(got4.singles.tolist()) == sorted(want4.singles.tolist())
    assert sorted(got4.net_list()) == sorted(want4.net_list())
    assert got.entries == want.entries
    assert (got.a6, got.n6, got.bad, got.samples) == (want.a6, want.n6, want.bad, want.samples)


octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["256", "01", "000", "1000", ""]))
address = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", octet, octet, octet, octet)
entry = st.one_of(
    address,
    st.builds(lambda a, n: f"{a}/{n}", address,
              st.one_of(st.integers(0, 33).map(str), st.sampled_from(["", "024", "x", "/8"]))),
    st.sampled_from(["", "# comment", "; c", "1.2.3.4 # note", " 1.2.3.4", "1.2.3.4\t",
                     "2001:db8::1", "2001:db8::/32", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3",
                     "1.2.3.4/", "1.2/3.4.5", "1.2.3.4/8/8", "é1.2.3.4", "255.255.255.255/32",
                     "0.0.0.0/0", "10.0.0.1/8"]),
    st.text(alphabet="0123456789./\n #", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(entry, max_size=40), st.booleans(), st.booleans())
def test_equals_line_by_line(lines: list[str], crlf: bool, final_newline: bool) -> None:
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if final_newline else "")
    same(text.encode())


def test_big_body_across_blocks() -> None:
    rnd = random.Random(7)
    lines = []
    for i in range(30_000):
        a = rnd.randrange(1 << 32)
        text = f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"
        if i % 10 == 0:
            text += f"/{rnd.randrange(0, 33)}"
        if i % 997 == 0:
            text = "# a comment line"
        if i % 1999 == 0:
            text = ""
        lines.append(text)
    data = "\n".join(lines).encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parse_fast, "_BLOCK", 4096)  # many blocks, block edges mid-file
        same(data)
        mp.setattr(parse_fast, "_MAX_ODD", 1)  # odd blocks read wholly line by line
        same(data)
    same(data)


def test_values() -> None:
    got = parse_plain_bytes(b"1.2.3.4\n10.0.0.0/8\n255.255.255.255/32\n0.0.0.0/0\n"
                            b"10.20.30.40/8\n")
    assert sorted(got.v4().singles.tolist()) == [0x01020304, 0xFFFFFFFF]
    assert sorted(got.v4().net_list()) == [(0, 0), (0x0A000000, 8)]
    assert got.entries == 4 and not got.a4  # the vector reader's entries stay arrays
    assert got.bad == 1 and got.samples[0][:2] == (5, "10.20.30.40/8")  # host bits: refused
