"""Egress proxy benchmark: outguard's proxy beside tinyproxy and Squid, same run, same namespace,
same origin and clients.

    sudo .venv/bin/python bench/proxy.py [--seconds 5] [--tunnels 9900] [--prefix og-bench-]

One namespace (`<prefix>proxy-<hex>`, lo only): the origin (bench/tools/proxy_peer.py) on
198.51.100.10 (HTTP on :80, echo or 100 MB on :443), outguard's proxy on 127.0.0.1:3128
(`outguard proxy serve`, as outguard-proxy, resolving through /etc/netns/NAME/hosts),
tinyproxy on :3129 and Squid on :3130 (no cache, no logs). Each measurement is taken for the
three proxies one after the other, while holding flock /tmp/og-bench.lock:
- CONNECT setups/s: CONNECT, 4 bytes each way, close; 32 at once (proxy_peer.py connect);
- HTTP requests/s with `wrk` (HTTP/1.1, 32 connections): kept alive, and with
  `Connection: close` (a new connection per request);
- bulk: 100 MB down a CONNECT tunnel (proxy_peer.py tunnelbulk) and 100 MB of a plain HTTP
  GET (curl), each against the same download direct;
- added latency: GETs at a fixed rate, a new connection each (open loop), p50/p99 through the
  proxy minus direct;
- memory: RSS of the proxy process at rest and with TUNNELS idle tunnels open (10,000 do not
  fit: a tunnel holds two descriptors in the proxy, and this machine's hard limit is 20,000).
Prints the figures and the ratios outguard/tinyproxy and outguard/Squid; never a pass/fail gate.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (
    NS_PREFIX,
    REPO_DIR,
    BenchError,
    cleanup_scope,
    fmt_ratio,
    install_signal_handlers,
    log,
    ratio,
    require_root,
    run,
)

ORIGIN = "198.51.100.10"
PEER = Path(__file__).resolve().parent / "tools" / "proxy_peer.py"
OUTGUARD = REPO_DIR / ".venv" / "bin" / "outguard"
POLICY = """version: 1
allow:
  - {name: api, to: [api.example.test], ports: [80, 443]}
proxy:
  listen: ["127.0.0.1:3128"]
  limits: {connections: 30000, idle_timeout: 600}
"""
TINYPROXY = """Port 3129
Listen 127.0.0.1
Timeout 600
MaxClients 30000
Allow 127.0.0.1
ConnectPort 443
LogLevel Critical
"""
SQUID = """http_port 127.0.0.1:3130
pid_filename {tmp}/squid.pid
cache_log {tmp}/squid-cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 8 MB
max_filedescriptors 20000
shutdown_lifetime 1 seconds
coredump_dir {tmp}
acl SSL_ports port 443
acl CONNECT method CONNECT
acl localhost src 127.0.0.1/32
http_access deny CONNECT !SSL_ports
http_access allow localhost
http_access deny all
"""
PROXIES = {"outguard": "127.0.0.1:3128", "tinyproxy": "127.0.0.1:3129", "squid": "127.0.0.1:3130"}
PEERS = ("tinyproxy", "squid")
WRK = """wrk.method = "GET"
wrk.path = "http://api.example.test/"
wrk.headers["Host"] = "api.example.test"
%s
"""
LOCK = "/tmp/og-bench.lock"


def ns_exec(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, "prlimit", "--nofile=20000:20000", *argv]


def start(cleanup: object, netns: str, argv: list[str], ready: str | None,
          stderr_ready: bool = False) -> subprocess.Popen[str]:
    # a ready line on stderr: stdout (the proxy's JSON line per request) is not read
    out = subprocess.DEVNULL if stderr_ready else subprocess.PIPE
    proc = subprocess.Popen(ns_exec(netns, argv), stdout=out, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    cleanup.push(f"process {argv[0]}", lambda: (proc.kill(), proc.wait(5)))  # type: ignore[attr-defined]
    if ready is not None:
        stream = proc.stderr if stderr_ready else proc.stdout
        assert stream is not None
        line = stream.readline()
        if ready not in line:
            raise BenchError(f"{argv[0]} did not start: {line!r}")
    return proc


def wrk(netns: str, proxy: str, seconds: float, close: bool, tmp: str) -> float:
    script = Path(tmp) / ("wrk-close.lua" if close else "wrk-keep.lua")
    script.write_text(WRK % ('wrk.headers["Connection"] = "close"' if close else ""))
    out = run(["wrk", "-t", "2", "-c", "32", "-d", f"{seconds:g}s", "-s", str(script),
               f"http://{proxy}/"], netns=netns, timeout=seconds + 60).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise BenchError(f"wrk through {proxy}: {errors.group(1)} failed requests\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def peer(netns: str, *args: str, timeout: float = 300) -> dict[str, float]:
    out = run([sys.executable, str(PEER), *args], netns=netns, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bulk(netns: str, proxy: str | None) -> float:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}",
            *(["-x", f"http://{proxy}"] if proxy else []), "http://api.example.test/big"]
    return float(run(argv, netns=netns, timeout=300).stdout) * 8 / 1e6  # Mbit/s


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def tunnels_rss(netns: str, proxy: str, pid: int, count: int, cleanup: object) -> float:
    client = start(cleanup, netns, [sys.executable, str(PEER), "idle", proxy, str(count)], None)
    assert client.stdout is not None
    opened = json.loads(client.stdout.readline() or "{}").get("open")
    if opened != count:
        raise BenchError(f"only {opened} of {count} tunnels through {proxy}")
    mem = rss_mb(pid)
    client.communicate("", timeout=60)
    return mem


def start_all(cleanup: object, netns: str, tmp: Path) -> dict[str, subprocess.Popen[str]]:
    (tmp / "policy.yaml").write_text(POLICY)
    (tmp / "tinyproxy.conf").write_text(TINYPROXY)
    (tmp / "squid.conf").write_text(SQUID.format(tmp=tmp))
    tmp.chmod(0o777)  # Squid writes its pid and log as its own user
    start(cleanup, netns, [sys.executable, str(PEER), "origin", ORIGIN], "ready")
    procs = {
        "outguard": start(cleanup, netns, [str(OUTGUARD), "proxy", "serve",
                                            str(tmp / "policy.yaml")],
                          "listening", stderr_ready=True),
        "tinyproxy": start(cleanup, netns, ["tinyproxy", "-d", "-c",
                                             str(tmp / "tinyproxy.conf")], None),
        "squid": start(cleanup, netns, ["squid", "-N", "-f", str(tmp / "squid.conf")], None),
    }
    time.sleep(2)
    return procs


def measure(netns: str, procs: dict[str, subprocess.Popen[str]], args: argparse.Namespace,
            tmp: Path, cleanup: object) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    results: dict[str, dict[str, float]] = {name: {} for name in PROXIES}
    direct = {"bulk_tunnel_mbit_s": peer(netns, "tunnelbulk", "direct")["mbit_s"],
              "bulk_http_mbit_s": bulk(netns, None)}
    lat = peer(netns, "latency", "direct", str(args.rate), str(args.seconds))
    direct |= {"p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}
    steps = [
        ("connect_setups_per_s", lambda p: peer(netns, "connect", p, str(args.seconds),
                                                "32")["setups_per_s"]),
        ("http_rps_keepalive", lambda p: wrk(netns, p, args.seconds, False, str(tmp))),
        ("http_rps_new_conn", lambda p: wrk(netns, p, args.seconds, True, str(tmp))),
        ("bulk_tunnel_vs_direct", lambda p: peer(netns, "tunnelbulk", p)["mbit_s"]
         / direct["bulk_tunnel_mbit_s"]),
        ("bulk_http_vs_direct", lambda p: bulk(netns, p) / direct["bulk_http_mbit_s"]),
    ]
    only = set(filter(None, args.only.split(",")))
    steps = [step for step in steps if not only or step[0] in only]
    # latency first: the floods after it leave ~60,000 connections in TIME_WAIT to the origin
    for name, proxy in PROXIES.items() if not only or "latency" in only else ():
        log(f"latency at {args.rate:g}/s: {name}")
        lat = peer(netns, "latency", proxy, str(args.rate), str(args.seconds))
        results[name]["added_p50_ms"] = lat["p50_ms"] - direct["p50_ms"]
        results[name]["added_p99_ms"] = lat["p99_ms"] - direct["p99_ms"]
    for key, fn in steps:
        for name, proxy in PROXIES.items():
            log(f"{key}: {name}")
            results[name][key] = fn(proxy)
    for name, proxy in PROXIES.items() if not only or "memory" in only else ():
        log(f"memory: {name}, {args.tunnels} idle tunnels")
        results[name]["rss_mb_idle"] = rss_mb(procs[name].pid)
        results[name][f"rss_mb_{args.tunnels}_tunnels"] = tunnels_rss(
            netns, proxy, procs[name].pid, args.tunnels, cleanup)
    return results, direct


def report(results: dict[str, dict[str, float]], direct: dict[str, float]) -> None:
    print(f"{'':28} {'outguard':>10} {'tinyproxy':>10} {'squid':>10} {'/tiny':>7} {'/squid':>7}")
    for key in results["outguard"]:
        o = results["outguard"][key]
        t, q = results["tinyproxy"].get(key), results["squid"].get(key)
        print(f"{key:28} {o:10.2f} {t or 0:10.2f} {q or 0:10.2f}"
              f" {fmt_ratio(ratio(o, t)):>7} {fmt_ratio(ratio(o, q)):>7}")
    print(f"direct: {json.dumps(direct)}")
    print(json.dumps({"results": results, "direct": direct}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s for latency")
    parser.add_argument("--tunnels", type=int, default=9900)
    parser.add_argument("--prefix", default=NS_PREFIX, help="the namespace's name prefix")
    parser.add_argument("--only", default="", help="comma-separated figures to take (e.g."
                        " connect_setups_per_s,http_rps_keepalive); default: all")
    args = parser.parse_args()
    require_root()
    install_signal_handlers()
    for tool in ("wrk", "tinyproxy", "squid", "curl", "prlimit"):
        if shutil.which(tool) is None:
            raise BenchError(f"needs {tool} (Debian: wrk, tinyproxy, squid, curl, util-linux)")
    netns = f"{args.prefix}proxy-{secrets.token_hex(3)}"
    with cleanup_scope() as cleanup, tempfile.TemporaryDirectory() as tmp, \
            open(LOCK, "w") as lock:
        run(["ip", "netns", "add", netns])
        cleanup.push("namespace", lambda: run(["ip", "netns", "del", netns], check=False))
        run(["ip", "link", "set", "lo", "up"], netns=netns)
        run(["ip", "addr", "add", f"{ORIGIN}/32", "dev", "lo"], netns=netns)
        etc = Path("/etc/netns") / netns
        etc.mkdir(parents=True)
        cleanup.push("/etc/netns entry", lambda: shutil.rmtree(etc))
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{ORIGIN} api.example.test\n")
        procs = start_all(cleanup, netns, Path(tmp))
        log(f"waiting for {LOCK}")
        fcntl.flock(lock, fcntl.LOCK_EX)  # one benchmark at a time on this machine
        results, direct = measure(netns, procs, args, Path(tmp), cleanup)
    report(results, direct)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
