"""`suggest` and `simulate` from the store read the table summarised in SQL (grouped rows, one
decision per distinct question); from a `--flows` file they read every flow. Over the same
generated table both must print the same policy and the same replay."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from outguard.cli.main import cli
from outguard.events import LearnedFlow
from outguard.store.sqlite import SQLiteStore

NOW = datetime.now(UTC)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _table(seed: int) -> list[LearnedFlow]:
    """Services by unit, by executable only, an empty unit; >8 executables behind one unit;
    named and bare destinations (IPv4 and IPv6), a name list differing between rows of one
    address, ICMP without a port, DNS, loopback, classified rows, every kind of decision."""
    rng = random.Random(seed)
    dsts = [(f"203.0.113.{i}", (f"h{i % 3}.d{i % 7}.example.com",) if i % 3 else ())
            for i in range(1, 70)]
    dsts += [(f"2001:db8::{i:x}", (f"v6-{i}.example.org",)) for i in range(1, 20)]
    dsts += [("192.0.2.53", ()), ("127.0.0.1", ("localhost",)), ("198.51.100.9", ("cdn.co.uk",))]
    services = [("web.service", [f"/opt/web/bin/w{e}" for e in range(12)]),
                (None, ["/usr/bin/curl"]), ("", ["/usr/bin/wget"]),
                ("backup.service", ["/usr/bin/restic", "/usr/bin/ssh"])]
    out: list[LearnedFlow] = []
    for _ in range(900):
        unit, exes = rng.choice(services)
        dst, names = rng.choice(dsts)
        if names and rng.random() < 0.2:
            names = (*names, "alias.example.net")
        proto = rng.choice(["tcp", "tcp", "udp", "icmp"])
        port = None if proto == "icmp" else 53 if dst == "192.0.2.53" else rng.choice(
            [443, 80, 8443, 123])
        bad = rng.random() < 0.02
        uid = rng.choice([0, 33, None])
        first = NOW - timedelta(hours=rng.randrange(1, 100), seconds=rng.randrange(3600))
        out.append(LearnedFlow(
            exe=rng.choice(exes), cmdline=("x",), user={0: "root", 33: "www-data"}.get(uid or -1),
            uid=uid, unit=unit, cgroup=f"/system.slice/{unit}" if unit else "/user.slice",
            container=rng.choice([None, "c1"]), dst=dst, port=port, proto=proto, names=names,
            count=rng.randrange(1, 50), first_seen=first,
            last_seen=first + timedelta(seconds=rng.randrange(600)),
            decision=rng.choice(["", "allow:web", "deny:x", "default", "builtin:dns"]),
            signature="jndi-callback" if bad else None,
            severity=rng.choice(["critical", "medium", "low"]) if bad else None))
    # one (service, destination) reached by 12 executables, the later the larger their name:
    # which 8 a rule's comment names must not depend on the order the rows are read in
    for e in range(12):
        out.append(LearnedFlow(
            exe=f"/w/e{e:02d}", cmdline=("x",), user="root", uid=0, unit="many.service",
            cgroup="/system.slice/many.service", container=None, dst="203.0.113.200", port=443,
            proto="tcp", names=("big.example.com",), count=1,
            first_seen=NOW - timedelta(hours=2), last_seen=NOW - timedelta(minutes=60 - e)))
    return out


def _both(tmp: Path, seed: int) -> tuple[Path, Path]:
    """The table in a store, and the store's flows (in its order) in a file."""
    store = tmp / "events.db"
    db = SQLiteStore(store)
    db.record_flows(_table(seed))
    flows = tmp / "flows.jsonl"
    flows.write_text("".join(json.dumps(f.to_json()) + "\n" for f in db.flows()))
    db.close()
    return store, flows


def test_suggest_from_the_store_summary_is_the_suggestion_from_every_flow(tmp_path: Path) -> None:
    for seed in range(3):
        store, flows = _both(tmp_path, seed)
        for per in ("service", "host"):
            common = ("--per", per, "--since", "7d", "--state-dir", str(tmp_path))
            summarised = run("suggest", "--store", str(store), *common)
            every = run("suggest", "--flows", str(flows), *common)
            assert summarised.exit_code == every.exit_code == 0, summarised.output
            assert summarised.output == every.output
            assert "- name:" in summarised.output
        store.unlink()


def test_simulate_from_the_store_summary_is_the_replay_of_every_flow(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    # blocks most of the table: many processes with over 50 blocked destinations each
    policy.write_text("version: 1\nallow:\n  - {name: some, to: [203.0.113.0/26], ports: [443]}"
                      "\n  - {name: six, to: [v6-3.example.org]}\n")
    for seed in range(3):
        store, flows = _both(tmp_path, seed)
        common = ("--since", "7d", "--state-dir", str(tmp_path))
        summarised = run("simulate", str(policy), "--store", str(store), *common)
        every = run("simulate", str(policy), "--flows", str(flows), *common)
        assert summarised.exit_code == every.exit_code == 1
        assert summarised.output == every.output
        assert "would be blocked" in summarised.output
        store.unlink()
    suggested = tmp_path / "s.yaml"
    store, flows = _both(tmp_path, 7)
    assert run("suggest", "--store", str(store), "--out", str(suggested), "--state-dir",
               str(tmp_path)).exit_code == 0
    summarised = run("simulate", str(suggested), "--store", str(store), "--state-dir",
                     str(tmp_path))
    every = run("simulate", str(suggested), "--flows", str(flows), "--since", "7d",
                "--state-dir", str(tmp_path))
    assert summarised.output == every.output and summarised.exit_code == every.exit_code
