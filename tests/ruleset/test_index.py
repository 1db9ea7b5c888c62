"""One decision: the resolver's lookup, `decide()` and the compiled nftables table agree.

Over thousands of random policies (tests/ruleset/policygen.py: names, wildcards, lists holding
names and addresses, a threat feed, users, `dns:` or not, enforce or audit), for flows to names
and to addresses:

- a name the resolver refuses is one `decide` denies for every flow;
- a name the resolver answers: its address goes into the sets the resolver names, and the
  nftables table (walked by tests/nftables/nfteval.py) then gives the packet the verdict, the
  counter and the log prefix `decide` gives the flow, asked by name alone or by name and address;
- an address (including the resolver's upstream, loopback and the host's own address, which the
  kernel sends through `lo`): the table and `decide` agree.

The kernel itself is sampled in tests/kernel/test_decide_sample.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from datetime import datetime
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from outguard.errors import PolicyError
from outguard.feeds.policy import FEEDS
from outguard.nftables.model import Compiled
from outguard.nftables.nft import compile_ruleset
from outguard.policy import load
from outguard.ruleset.decide import Decision, Flow, FlowProto, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import SetName
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy
from tests.nftables.nfteval import Evaluator, Packet
from tests.nftables.test_semantics import _expected_trace
from tests.ruleset import policygen as gen

NOW = datetime.fromisoformat("2026-06-01T12:00:00+00:00")
_DIR = Path(tempfile.mkdtemp(prefix="og-policygen-"))  # the feed files the policies name
atexit.register(shutil.rmtree, _DIR, True)
gen.write_feed(_DIR)
_load = partial(load.load_text, feeds=FEEDS)

FLOWS_PER_POLICY = 12
EXAMPLES = int(os.environ.get("OG_EXAMPLES", "2000"))


def _lowered(text: str) -> Ruleset:
    policy = _load(text, str(_DIR / "policy.yaml"), base_dir=_DIR)
    return lower(policy, resolver=gen.fake_resolver, now=NOW)


def _kernel(compiled: Compiled, dst: str, proto: FlowProto, port: int | None, uid: int,
            sets: tuple[str, ...] = ()) -> tuple[str, list[str], list[str]]:
    """The compiled table's verdict, counters and log prefixes, with `dst` in the resolver-
    filled sets `sets` (what an answer for a name puts there)."""
    ev = Evaluator(compiled)
    version = 6 if ":" in dst else 4
    for base in sets:
        ev._elements[str(SetName.fqdn(base, version))] = [dst]
    oif = "lo" if dst in ("127.0.0.1", "::1", gen.LOCAL) else "eth0"
    out = ev.run(Packet(dst=dst, proto=proto, port=port, uid=uid, gid=uid, oif=oif, now=NOW))
    return out.verdict, out.counters, out.logs


def _same(rs: Ruleset, d: Decision, kernel: tuple[str, list[str], list[str]], what: str) -> None:
    counters, logs = _expected_trace(d, rs)
    assert kernel == (d.verdict, counters, logs), (
        f"{what}: decide says {d}, the table {kernel}")


_FLOW = st.tuples(st.sampled_from(["tcp", "udp", "icmp"]), st.sampled_from(gen.PORTS),
                  st.sampled_from(gen.USERS))
_DEST = st.one_of(
    st.tuples(st.just("name"), st.sampled_from(gen.NAMES)),
    st.tuples(st.just("addr"), st.sampled_from(
        (*gen.ADDRESSES, *gen.FEED_ADDRESSES, "127.0.0.1", "::1", gen.LOCAL,
         "203.0.113.5", "2001:db8:1::99", "198.51.100.200"))))


def check_flow(rs: Ruleset, compiled: Compiled, names: NamePolicy, dest: tuple[str, str],
               flow: tuple[FlowProto, int, int]) -> None:
    proto, port_, uid = flow
    port = port_ if proto in ("tcp", "udp") else None
    base = Flow(port=port, proto=proto, uid=uid, gid=uid)
    kind, value = dest
    local = frozenset({gen.LOCAL})
    if kind == "addr":
        d = decide(rs, Flow(**{**base.__dict__, "dst": value}), NOW, local=local)
        _same(rs, d, _kernel(compiled, value, proto, port, uid), f"{proto}/{port} to {value} as {uid}")
        return
    if rs.dns is None:  # the name was resolved when the policy was lowered: its addresses decide
        for address in gen.RESOLVED[value]:
            d = decide(rs, Flow(**{**base.__dict__, "dst": address, "name": value}), NOW,
                       local=local)
            _same(rs, d, _kernel(compiled, address, proto, port, uid),
                  f"{proto}/{port} to {value} ({address}) as {uid}")
        return
    verdict = names.lookup(value)
    by_name = decide(rs, Flow(**{**base.__dict__, "name": value}), NOW, local=local)
    if verdict.action != "resolve":
        assert by_name.action == "deny", (
            f"the resolver refuses {value} ({verdict}), decide allows {proto}/{port}: {by_name}")
        if rs.mode == "enforce":
            return  # no answer, so no address in any set
    for version in (4, 6):
        address = gen.FRESH[version]
        d = decide(rs, Flow(**{**base.__dict__, "dst": address, "name": value}), NOW,
                   local=local)
        assert (d.rule, d.verdict) == (by_name.rule, by_name.verdict), (value, d, by_name)
        _same(rs, d, _kernel(compiled, address, proto, port, uid, verdict.sets),
              f"{proto}/{port} to {value} ({address}, answered by the resolver: {verdict})"
              f" as {uid}")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=gen.policies(), flows=st.lists(st.tuples(_DEST, _FLOW), min_size=FLOWS_PER_POLICY,
                                           max_size=FLOWS_PER_POLICY))
def test_resolver_decide_and_table_agree(text: str,
                                         flows: list[tuple[tuple[str, str],
                                                           tuple[FlowProto, int, int]]]) -> None:
    try:
        rs = _lowered(text)
    except PolicyError:  # a deny rule for every destination that covers the upstream
        reject()
    compiled, names = compile_ruleset(rs), NamePolicy.of(rs)
    for dest, flow in flows:
        check_flow(rs, compiled, names, dest, flow)
