"""Name lookups before and after `ruleset.index.DecisionIndex` (issue 15 §1). Pure, no root.

Before the index, `decide` asked every rule of the ruleset "do you name this?" by scanning the
rule's names and the entries of every list it uses, per call; the resolver's `NamePolicy` built
its own tables. Now both read one index. This prints, for a policy of many rules and lists of
many names (`--rules`, `--list-size`), in one run:

- decide by name: the old per-rule scan (reproduced here as `scan_names`) against the index;
- the resolver's `NamePolicy.lookup` (its hot path, on every query): same tables as before;
- building `NamePolicy.of` (once per policy change), index included.

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from outguard.policy.load import load_text
from outguard.ruleset import index as index_module
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.index import normalize, rule_names
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy


def policy_text(rules: int, list_size: int) -> str:
    lines = ["version: 1", "allow:"]
    for i in range(rules):
        lines += [f"  - name: r{i}", f'    to: ["@l{i % 10}", "h{i}.example.test",'
                  f' "*.z{i}.example.test"]', "    ports: [443]", "    proto: tcp"]
    lines.append("lists:")
    for j in range(10):
        names = ", ".join(f"n{k}.l{j}.example.test" for k in range(list_size // 10))
        lines.append(f'  l{j}: [{names}, "*.w{j}.example.test"]')
    lines += ["dns:", '  listen: "127.0.0.1:53"', '  upstreams: ["192.0.2.53"]',
              "  user: nobody"]
    return "\n".join(lines) + "\n"


def scan_names(ruleset: Ruleset, rule: IRRule, name: str) -> bool:
    """decide's name match before the index: the rule's names and its lists', scanned."""
    name = normalize(name)
    names, wildcards = rule_names(ruleset, rule)
    if name in names:
        return True
    return any(name.endswith(w[1:]) and len(name) > len(w) - 1 for w in wildcards)


def per_second(fn: Callable[[str], object], names: list[str], budget: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        for n in names:
            fn(n)
        done += len(names)
    return done / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=100)
    ap.add_argument("--list-size", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = ap.parse_args()
    rs = lower(load_text(policy_text(args.rules, args.list_size)))
    now = datetime.now(UTC)
    rng = random.Random(15)
    names = ([f"n{rng.randrange(args.list_size // 10)}.l{rng.randrange(10)}.example.test"
              for _ in range(200)] + [f"a.z{rng.randrange(args.rules)}.example.test"
                                      for _ in range(100)]
             + [f"nobody{i}.example.test" for i in range(100)])
    rules = rs.rules()

    def before(name: str) -> object:
        return next((r for r in rules if scan_names(rs, r, name)), None)

    def after(name: str) -> object:
        return decide(rs, Flow(name=name, port=443, proto="tcp"), now)

    for n in names:  # the same answers, or the comparison means nothing
        want = next((r.counter for r in rules if scan_names(rs, r, n)), "default")
        assert after(n).rule == want, (n, after(n), want)
    small = names[:40]
    t_before = per_second(before, small, args.seconds)
    t_after = per_second(after, names, args.seconds)
    start = time.perf_counter()
    index_module._CACHE.clear()
    policy = NamePolicy.of(rs)
    build = time.perf_counter() - start
    t_lookup = per_second(policy.lookup, names, args.seconds)
    result = {"rules": args.rules, "list_names": args.list_size,
              "decide_by_name_before_per_s": round(t_before),
              "decide_by_name_after_per_s": round(t_after),
              "decide_ratio": round(t_after / t_before, 1),
              "resolver_lookup_per_s": round(t_lookup), "namepolicy_build_s": round(build, 3)}
    print(f"decide by name, {args.rules} rules, lists of {args.list_size} names:\n"
          f"  before (scan every rule's names): {t_before:12,.0f} /s\n"
          f"  after  (DecisionIndex):           {t_after:12,.0f} /s   ratio {t_after / t_before:.1f}×\n"
          f"resolver NamePolicy.lookup:         {t_lookup:12,.0f} /s   (same tables as before)\n"
          f"NamePolicy.of (index included):     {build:12.3f} s", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
