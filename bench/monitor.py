"""NFLOG ingest: blocked-packet events per second taken in with zero loss on one core, outguard's
`NflogSource` against ulogd2 (Debian's, NFLOG → BASE → IFINDEX → IP2STR → JSON file).

Issue: "NFLOG events per second ingested with zero loss on one core, beside ulogd2 logging the
same group to a JSON file, in the same run. Targets: >= 50,000 events/s, and >= 0.5x ulogd2."

    sudo .venv/bin/python bench/monitor.py            # ~2 min; --quick: ~40 s

One namespace ``ogb-<hex>`` (a veth pair inside it routes 198.51.100.0/24; nothing leaves it) with the
policy ``deny: [198.51.100.0/24]``, ``log_rate`` high enough never to limit, NFLOG group 5,
applied with ``outguard apply --netns``. For each rate of a ladder, each reader in turn (order
alternating per rate) binds the group pinned to CPU 0 (``taskset -c 0``), `nflogload` (C,
pinned to CPU 1) sends that many UDP datagrams per second to 198.51.100.7 for `--duration`
seconds (each one logged and dropped), then the reader is stopped and its count compared with
the deny rule's kernel counter. Loss = counted - received. A reader's figure is the highest
rate it took with zero loss at that rate and every lower one.

Both readers get the same kernel settings: queue threshold 256, timeout 10 ms, nlbufsiz 128 KiB,
socket buffer 8 MiB. Our reader decodes each packet into a `BlockedPacket` (addresses as text,
ports, uid, prefix) and counts it; ulogd2 decodes the same fields and writes a JSON line each.
The reader is a separate process so `taskset` pins it alone; progress goes to stderr, the table
and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

GROUP = 5
TARGET = "198.51.100.7"
QTHRESH, QTIMEOUT_CS, NLBUFSIZ = 256, 1, 131072
RCVBUF, RCVBUF_BACKLOG = 8 << 20, 384 << 20  # paced; a backlog (ulogd: 2x must fit an int)
POLICY = f"""\
version: 1
mode: enforce
deny:
  - name: flood
    to: [198.51.100.0/24]
options:
  nflog_group: {GROUP}
  log_rate: 100000000/second
"""
ULOGD_PLUGINS = "/usr/lib/x86_64-linux-gnu/ulogd"


# --- our reader: runs as `monitor.py --reader` inside the namespace --------------------------


def reader_main(rcvbuf: int) -> None:
    from outguard.kernel.nflog import NflogSource

    async def run() -> dict[str, Any]:
        source = NflogSource(GROUP, qthreshold=QTHRESH, timeout=QTIMEOUT_CS / 100,
                             nlbufsiz=NLBUFSIZ, rcvbuf=rcvbuf)
        source.open()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        ports = 0

        async def consume() -> None:
            nonlocal ports
            async for batch in source:
                for pkt in batch:  # touch what the monitor reads, as a consumer would
                    if pkt.dport:
                        ports += 1

        task = asyncio.create_task(consume())
        await stop.wait()
        task.cancel()
        while source.read_nowait():
            pass
        source.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {**source.stats.as_dict(), "cpu_s": usage.ru_utime + usage.ru_stime,
                "with_ports": ports}

    print(json.dumps(asyncio.run(run())), flush=True)


# --- orchestration ---------------------------------------------------------------------------


def ulogd_conf(tmp: Path, rcvbuf: int) -> tuple[Path, Path]:
    out = tmp / "ulogd.json"
    conf = tmp / "ulogd.conf"
    plugins = ["inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR",
               "output_JSON"]
    conf.write_text("\n".join([
        "[global]",
        f'logfile="{tmp / "ulogd.log"}"',
        "loglevel=5",
        *(f'plugin="{ULOGD_PLUGINS}/ulogd_{p}.so"' for p in plugins),
        "stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON",
        "[log1]",
        f"group={GROUP}",
        f"bufsize={NLBUFSIZ}",
        f"netlink_socket_buffer_size={rcvbuf}",
        # ulogd applies the size only if it is below the maximum (setnlbufsiz: size < max)
        f"netlink_socket_buffer_maxsize={2 * rcvbuf}",
        f"netlink_qthreshold={QTHRESH}",
        f"netlink_qtimeout={QTIMEOUT_CS}",
        "[json1]",
        "sync=0",
        f'file="{out}"',
        "",
    ]))
    return conf, out


def bound(ns: str) -> bool:
    text = bl.run(["cat", "/proc/net/netfilter/nfnetlink_log"], netns=ns, check=False).stdout
    return any(line.split()[:1] == [str(GROUP)] for line in text.splitlines())


def wait_drained(ns: str, timeout: float = 60) -> float:
    """Wait until the reader has taken everything queued; return when that was (monotonic)."""
    from outguard.kernel.netns import NetnsThread

    def read() -> int:
        rows = Path("/proc/thread-self/net/netlink").read_text().splitlines()[1:]
        return sum(int(r.split()[4]) for r in rows if r.split()[1] == "12")

    with NetnsThread(ns) as thread:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if thread.call(read) == 0:
                return time.monotonic()
            time.sleep(0.002)
    raise bl.BenchError(f"the reader did not drain its socket in {timeout:.0f} s")


def counted(ns: str) -> int:
    from outguard.kernel import counters
    from outguard.kernel.netns import NetnsThread

    with NetnsThread(ns) as thread:
        return thread.call(counters.read_counters)["deny.flood"][0]


def one_step(ns: str, who: str, rate: int, duration: float, tmp: Path, load: Path,
             cleanup: bl.Cleanup, *, backlog: bool = False) -> dict[str, Any]:
    """One reader, one load. `backlog`: the reader is stopped (SIGSTOP) while the whole load
    is queued in its socket buffer, then resumed and timed until the buffer is empty: its
    ingest rate on one core, whatever the load generator can do on this machine."""
    rcvbuf = RCVBUF_BACKLOG if backlog else RCVBUF
    if who == "ulogd2":
        conf, out = ulogd_conf(tmp, rcvbuf)
        out.unlink(missing_ok=True)
        argv = ["taskset", "-c", "0", "ulogd", "-c", str(conf)]
    else:
        argv = ["taskset", "-c", "0", str(bl.VENV_PYTHON), str(Path(__file__).resolve()),
                "--reader", str(rcvbuf)]
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    cleanup.push(f"{who} reader", lambda: bl.stop_process(proc, who))
    try:
        bl.wait_for(lambda: bound(ns) or proc.poll() is not None, f"{who} to bind", 20)
        if proc.poll() is not None:
            raise bl.BenchError(f"{who} exited: {proc.stderr.read() if proc.stderr else ''}")
        before = counted(ns)
        if backlog:
            time.sleep(0.3)  # let the reader finish its start-up before it is stopped
            os.kill(proc.pid, signal.SIGSTOP)  # ip netns exec and taskset exec: same pid
        sent = json.loads(bl.run(["taskset", "-c", "1", load, "-a", TARGET, "-r", str(rate),
                                  "-d", str(duration)], netns=ns,
                                 timeout=duration + 120).stdout)
        drain_s = None
        if backlog:
            time.sleep(0.05)  # the kernel's last partial batch (10 ms timeout)
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGCONT)
            drain_s = wait_drained(ns) - t0
        else:
            time.sleep(0.05)
            wait_drained(ns)
        time.sleep(0.3)  # the last batch in the reader's hands
        logged = counted(ns) - before
        bl.stop_process(proc, who, grace=20)
        stdout = proc.stdout.read() if proc.stdout else ""
    finally:
        bl.stop_process(proc, who)
    if who == "ulogd2":
        lines = out.read_text().splitlines() if out.exists() else []
        if lines and "dest_ip" not in json.loads(lines[-1]) and "dest_ip" not in lines[-1]:
            raise bl.BenchError(f"ulogd2 JSON lacks dest_ip: {lines[-1][:200]}")
        received, extra = len(lines), {}
    else:
        stats = json.loads(stdout.strip().splitlines()[-1])
        received, extra = stats["received"], stats
        if stats["lost"] != logged - received:
            extra["books"] = f"reader counted lost {stats['lost']}, kernel says {logged - received}"
    return {"who": who, "rate": rate, "sent_rate": sent["rate"], "logged": logged,
            "received": received, "lost": logged - received, "drain_s": drain_s,
            "drain_rate": logged / drain_s if drain_s else None, "reader": extra}


def zero_loss_rate(steps: list[dict[str, Any]], who: str) -> float:
    best = 0.0
    for step in sorted((s for s in steps if s["who"] == who), key=lambda s: s["rate"]):
        if step["lost"] != 0:
            break
        best = max(best, step["sent_rate"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=300_000,
                        help="packets queued for the stopped reader (default 300000)")
    parser.add_argument("--rounds", type=int, default=3, help="backlog rounds per reader")
    parser.add_argument("--rates", default="25000,50000,75000,100000,150000")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="one backlog round, 3 rates of 2 s")
    args = parser.parse_args()
    if args.reader is not None:
        reader_main(args.reader)
        return
    bl.require_root()
    bl.require_commands("ulogd", "taskset", "gcc", "ip", "nft")
    bl.install_signal_handlers()
    rates = [int(r) for r in args.rates.split(",")]
    if args.quick:
        rates, args.duration, args.rounds = [25000, 50000, 100000], 2.0, 1
    fingerprint = bl.host_firewall_fingerprint()
    steps: list[dict[str, Any]] = []
    with bl.cleanup_scope() as cleanup, tempfile.TemporaryDirectory(prefix="ogb-") as tmpdir:
        tmp = Path(tmpdir)
        os.chmod(tmp, 0o755)
        load = bl.build_tool("nflogload")
        ns = f"ogb-{secrets.token_hex(4)}"
        bl.run(["ip", "netns", "add", ns])
        cleanup.push(f"namespace {ns}", lambda: bl.del_netns(ns))
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                    ["addr", "add", "192.0.2.2/24", "dev", "d0"], ["link", "set", "d0", "up"],
                    ["link", "set", "d1", "up"], ["route", "add", "198.51.100.0/24", "dev", "d0"]):
            bl.run(["ip", "-n", ns, *cmd])
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        bl.run([bl.VENV_PYTHON, "-m", "outguard", "apply", "--netns", ns, "--state-dir",
                tmp / "state", policy], timeout=120)
        bl.log(f"namespace {ns}: policy applied; other load on the machine "
               f"{bl.cpu_busy(1.0):.0%}")
        backlog: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for who in (["outguard", "ulogd2"] if r % 2 == 0 else ["ulogd2", "outguard"]):
                step = one_step(ns, who, 1_000_000, args.backlog / 1e6, tmp, load, cleanup,
                                backlog=True)
                backlog.append(step)
                bl.log(f"{who:8} backlog of {step['logged']:,}: drained in "
                       f"{step['drain_s']:.2f} s = {step['drain_rate']:,.0f} events/s, "
                       f"received {step['received']:,}, lost {step['lost']:,}")
        for i, rate in enumerate(rates):
            order = ["outguard", "ulogd2"] if i % 2 == 0 else ["ulogd2", "outguard"]
            for who in order:
                step = one_step(ns, who, rate, args.duration, tmp, load, cleanup)
                steps.append(step)
                bl.log(f"{who:8} rate {rate:>7,}/s: sent {step['sent_rate']:>9,.0f}/s, "
                       f"logged {step['logged']:>8,}, received {step['received']:>8,}, "
                       f"lost {step['lost']:>7,}"
                       + (f", reader cpu {step['reader']['cpu_s']:.1f} s"
                          if who == "outguard" else ""))
            # stop climbing once both readers lost packets at two rates in a row
            if i >= 1 and all(s["lost"] for s in steps if s["rate"] in rates[i - 1 : i + 1]):
                break
    if bl.host_firewall_fingerprint() != fingerprint:
        bl.log("WARNING: the host namespace's firewall changed during the run (not by us?)")
    def drained(who: str) -> float | None:
        rates_ = [s["drain_rate"] for s in backlog if s["who"] == who]
        if not rates_ or any(s["lost"] for s in backlog if s["who"] == who):
            return None  # a round with a loss: no zero-loss figure
        return bl.median(rates_)

    ours_b, theirs_b = drained("outguard"), drained("ulogd2")
    print(f"\nNFLOG ingest on one CPU: a backlog of {args.backlog:,} events queued for the "
          f"stopped reader, drained (median of {args.rounds}; zero loss required)")
    for who, fig in (("outguard", ours_b), ("ulogd2", theirs_b)):
        runs = ", ".join(f"{s['drain_rate']:,.0f}/s lost {s['lost']}" for s in backlog
                         if s["who"] == who)
        print(f"  {who:8} {fig or 0:>10,.0f} events/s   ({runs})")
    ratio_b = bl.ratio(ours_b, theirs_b)
    print(f"  ratio outguard/ulogd2: {bl.fmt_ratio(ratio_b)} (targets: >= 50,000/s, >= 0.5)")
    ours, theirs = zero_loss_rate(steps, "outguard"), zero_loss_rate(steps, "ulogd2")
    print("\nPaced load (nflogload on the other CPU; what it reaches on this machine caps it)")
    print(f"{'rate':>9} | {'outguard sent':>13} {'lost':>8} | {'ulogd2 sent':>11} {'lost':>8}")
    for rate in dict.fromkeys(s["rate"] for s in steps):
        row = {s["who"]: s for s in steps if s["rate"] == rate}
        o, u = row.get("outguard"), row.get("ulogd2")
        print(f"{rate:>9,} | {o['sent_rate'] if o else 0:>13,.0f} {o['lost'] if o else '-':>8} | "
              f"{u['sent_rate'] if u else 0:>11,.0f} {u['lost'] if u else '-':>8}")
    ratio = bl.ratio(ours, theirs)
    print(f"  highest paced rate taken with zero loss: outguard {ours:,.0f}/s, "
          f"ulogd2 {theirs:,.0f}/s, ratio {bl.fmt_ratio(ratio)}")
    print(json.dumps({"outguard_backlog_eps": ours_b, "ulogd2_backlog_eps": theirs_b,
                      "ratio_backlog": ratio_b, "outguard_paced_zero_loss_eps": ours,
                      "ulogd2_paced_zero_loss_eps": theirs, "ratio_paced": ratio,
                      "backlog": backlog, "steps": steps}))


if __name__ == "__main__":
    main()
