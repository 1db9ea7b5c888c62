"""DNS resolver benchmark: outguard's resolver beside dnsmasq with `nftset=`, same run, same upstream.

    sudo .venv/bin/python bench/dns.py [--seconds 10] [--trials 2000]

Two namespaces (`ogb-<hex>`, from tests/kernel/topology.py): the server runs outguard's table
(a policy with `dns:`), outguard's resolver on 127.0.0.1:53 and dnsmasq on 127.0.0.2:53
(`--server=` the same upstream, `--nftset=` into the same FQDN sets); the peer runs the upstream,
dnsmasq authoritative for example.test. Measured, alternately for both:
- throughput: `dnsperf -l SECONDS` over a set of allowed names (answers mostly cached, as in life);
- latency p50/p99 at 1,000 queries/s from a paced Python client (same client for both, so its
  own cost cancels out in the difference);
- "set before answer": TRIALS fresh names (unique IPv6 addresses under a wildcard rule), each
  answer followed at once by a TCP connect to its address: passes only if the kernel set already
  holds it.
Prints the figures and ratios; never a pass/fail gate.
"""

from __future__ import annotations

import argparse
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is named dns.py: its own directory on sys.path would shadow dnspython's `dns`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import dns.message  # noqa: E402

from outguard.kernel import netns as ns  # noqa: E402
from tests.kernel.dnsenv import UPSTREAM, addresses, connect, dns_world  # noqa: E402
from tests.kernel.topology import build  # noqa: E402

OURS, PEER = ("127.0.0.1", 53), ("127.0.0.2", 53)
NAMES = [f"h{i}.example.test" for i in range(20)]
POLICY = f"""
version: 1
dns: {{listen: "127.0.0.1:53", upstreams: ["{UPSTREAM}"], min_ttl: 300}}
allow:
  - name: web
    to: [{", ".join(NAMES)}, "*.fresh.example.test"]
    ports: [80]
"""


def new_netns() -> str:
    name = f"ogb-{secrets.token_hex(4)}"
    ns.add(name)
    ns.run(name, ["ip", "link", "set", "lo", "up"])
    return name


def dnsperf(netns: str, server: tuple[str, int], seconds: int, data: Path) -> float:
    out = ns.run(netns, ["dnsperf", "-s", server[0], "-p", str(server[1]), "-d", str(data),
                         "-l", str(seconds), "-c", "4", "-q", "200"], timeout=seconds + 60).stdout
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"dnsperf printed no rate:\n{out}")
    return float(match.group(1))


def paced_latency(world, server: tuple[str, int], rate: int, seconds: float) -> tuple[float, float]:
    def go() -> list[float]:
        lat = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            s.connect(server)
            start = time.perf_counter()
            n = int(rate * seconds)
            for i in range(n):
                due = start + i / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(max(0.0, due - now - 0.0002))
                q = dns.message.make_query(NAMES[i % len(NAMES)], "A")
                q.id = i & 0xFFFF
                t0 = time.perf_counter()
                s.send(q.to_wire())
                s.recv(2048)
                lat.append(time.perf_counter() - t0)
        return lat
    lat = sorted(world.topo.thread.call(go))
    return statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000


def set_trials(world, server: tuple[str, int], prefix: str, trials: int) -> tuple[int, int]:
    ok = 0
    for i in range(trials):
        got = addresses(world.ask(f"n{i}.{prefix}.fresh.example.test", "AAAA", server=server))
        if got and connect(world.topo, got[0], 80, timeout=0.5) == "refused":
            ok += 1
    return ok, trials


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with build(new_netns) as topo, dns_world(topo) as w:
        records = {n: [f"198.51.100.{100 + i}"] for i, n in enumerate(NAMES)}
        for tag, base in (("a", 0x1000), ("b", 0x4000)):
            for i in range(args.trials):
                addr = f"2001:db8:{base + i // 60000:x}::{i % 60000 + 1:x}"
                records[f"n{i}.{tag}.fresh.example.test"] = [addr]
        w.set_hosts(records, reload=False)
        w.start_dnsmasq(ttl=300)
        rs = w.apply(POLICY)
        w.start_resolver()
        base = rs.allow[0].fqdn_set
        pid = Path(tempfile.mkdtemp(prefix="ogb-")) / "peer-dnsmasq.pid"
        ns.run(topo.server, ["dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                             f"--pid-file={pid}", "--listen-address=127.0.0.2", "--bind-interfaces",
                             # as the resolver user: the only uid the ruleset lets reach UPSTREAM
                             "--port=53", f"--server={UPSTREAM}", "--user=outguard-dns",
                             "--group=outguard-dns",
                             "--cache-size=10000",
                             f"--nftset=/example.test/4#inet#outguard#{base}_4,6#inet#outguard#{base}_6"])
        try:
            data = w.dir / "queries.txt"
            data.write_text("".join(f"{n} A\n" for n in NAMES))
            for server in (OURS, PEER):  # warm both caches
                for n in NAMES:
                    w.ask(n, server=server)
            qps: dict[str, list[float]] = {"outguard": [], "dnsmasq": []}
            for _ in range(args.rounds):
                qps["outguard"].append(dnsperf(topo.server, OURS, args.seconds, data))
                qps["dnsmasq"].append(dnsperf(topo.server, PEER, args.seconds, data))
            lat = {"outguard": paced_latency(w, OURS, 1000, 5), "dnsmasq": paced_latency(w, PEER, 1000, 5)}
            held = {"outguard": set_trials(w, OURS, "a", args.trials),
                    "dnsmasq": set_trials(w, PEER, "b", args.trials)}
        finally:
            if pid.exists():
                subprocess.run(["kill", pid.read_text().strip()], check=False)
        og, dm = statistics.median(qps["outguard"]), statistics.median(qps["dnsmasq"])
        print(f"throughput (dnsperf, cached answers, median of {args.rounds}):"
              f" outguard {og:,.0f} q/s, dnsmasq {dm:,.0f} q/s, ratio {og / dm:.2f}x (target >= 0.5x)")
        (p50o, p99o), (p50d, p99d) = lat["outguard"], lat["dnsmasq"]
        print(f"latency at 1,000 q/s: outguard p50 {p50o:.3f} ms p99 {p99o:.3f} ms;"
              f" dnsmasq p50 {p50d:.3f} ms p99 {p99d:.3f} ms; added p99 {p99o - p99d:+.3f} ms"
              " (target <= 1 ms)")
        for who, (ok, n) in held.items():
            print(f"set holds the address before the answer ({who}): {ok}/{n} = {100 * ok / n:.1f}%")
        stats = w.resolver.handle.stats() if w.resolver else None
        print(f"outguard resolver stats: {stats}")


if __name__ == "__main__":
    main()
