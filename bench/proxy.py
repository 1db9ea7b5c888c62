"""Egress proxy benchmark: outguard's proxy beside tinyproxy, same run, same namespace, same
origin and clients.

    sudo .venv/bin/python bench/proxy.py [--seconds 5] [--tunnels 10000]

One namespace (`og-bench-proxy-<hex>`, lo only): the origin (bench/tools/proxy_peer.py) on
198.51.100.10 (HTTP on :80, echo on :443), outguard's proxy on 127.0.0.1:3128 (`outguard
proxy serve`, as outguard-proxy, resolving through /etc/netns/NAME/hosts) and tinyproxy on
127.0.0.1:3129. Measured alternately for both:
- HTTP requests/s through the proxy, new connection per request: `ab -X -n N -c 32`;
  with `ab -k` too (ab speaks HTTP/1.0 keep-alive: neither proxy keeps 1.0 clients alive);
- CONNECT setups/s: CONNECT, 4 bytes each way, close; 32 at once (proxy_peer.py connect);
- bulk: 100 MB through each proxy with curl, against the same download direct;
- memory: RSS of the proxy process with TUNNELS idle tunnels open.
Prints the figures and the ratios outguard/tinyproxy; never a pass/fail gate. Squid is not in
this run yet.
"""

from __future__ import annotations

import argparse
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
PROXIES = {"outguard": "127.0.0.1:3128", "tinyproxy": "127.0.0.1:3129"}


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


def ab(netns: str, proxy: str, n: int, keep_alive: bool) -> float:
    argv = ["ab", "-q", "-n", str(n), "-c", "32", "-X", proxy, *(["-k"] if keep_alive else []),
            "http://api.example.test/"]
    out = run(argv, netns=netns, timeout=300).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    if failed:
        raise BenchError(f"ab through {proxy}: {failed} failed requests")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=5000)
    # 10,000 needs 20,000+ descriptors in the proxy: more than this container's hard limit
    parser.add_argument("--tunnels", type=int, default=9000)
    args = parser.parse_args()
    require_root()
    install_signal_handlers()
    for tool in ("ab", "tinyproxy", "curl", "prlimit"):
        if shutil.which(tool) is None:
            raise BenchError(f"needs {tool} (Debian: apache2-utils, tinyproxy, curl, util-linux)")
    netns = f"{NS_PREFIX}proxy-{secrets.token_hex(3)}"
    results: dict[str, dict[str, float]] = {name: {} for name in PROXIES}
    with cleanup_scope() as cleanup, tempfile.TemporaryDirectory() as tmp:
        run(["ip", "netns", "add", netns])
        cleanup.push("namespace", lambda: run(["ip", "netns", "del", netns], check=False))
        run(["ip", "link", "set", "lo", "up"], netns=netns)
        run(["ip", "addr", "add", f"{ORIGIN}/32", "dev", "lo"], netns=netns)
        etc = Path("/etc/netns") / netns
        etc.mkdir(parents=True)
        cleanup.push("/etc/netns entry", lambda: shutil.rmtree(etc))
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{ORIGIN} api.example.test\n")
        Path(tmp).chmod(0o755)
        (Path(tmp) / "policy.yaml").write_text(POLICY)
        (Path(tmp) / "tinyproxy.conf").write_text(TINYPROXY)
        start(cleanup, netns, [sys.executable, str(PEER), "origin", ORIGIN], "ready")
        procs = {
            "outguard": start(cleanup, netns, [str(OUTGUARD), "proxy", "serve",
                                                str(Path(tmp) / "policy.yaml")],
                              "listening", stderr_ready=True),
            "tinyproxy": start(cleanup, netns, ["tinyproxy", "-d", "-c",
                                                 str(Path(tmp) / "tinyproxy.conf")], None),
        }
        time.sleep(1)
        direct = bulk(netns, None)
        for name, proxy in PROXIES.items():
            log(f"{name}: requests, CONNECT setups, bulk, {args.tunnels} idle tunnels")
            r = results[name]
            r["http_rps_new_conn"] = ab(netns, proxy, args.requests, keep_alive=False)
            r["http_rps_ab_k"] = ab(netns, proxy, args.requests, keep_alive=True)
            out = run([sys.executable, str(PEER), "connect", proxy, str(args.seconds), "32"],
                      netns=netns, timeout=120).stdout
            r["connect_setups_per_s"] = json.loads(out)["setups_per_s"]
            r["bulk_mbit_s"] = bulk(netns, proxy)
            r["bulk_vs_direct"] = r["bulk_mbit_s"] / direct
            r["rss_mb_idle"] = rss_mb(procs[name].pid)
            r[f"rss_mb_{args.tunnels}_tunnels"] = tunnels_rss(netns, proxy, procs[name].pid,
                                                              args.tunnels, cleanup)
    print(f"{'':32} {'outguard':>12} {'tinyproxy':>12} {'ratio':>8}")
    for key in results["outguard"]:
        o, t = results["outguard"][key], results["tinyproxy"].get(key)
        print(f"{key:32} {o:12.1f} {t or 0:12.1f} {fmt_ratio(ratio(o, t)):>8}")
    print(f"{'direct bulk Mbit/s':32} {direct:12.1f}")
    print(json.dumps({"results": results, "direct_bulk_mbit_s": direct}))


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
