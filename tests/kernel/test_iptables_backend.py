"""The iptables export, deployed by its own `deploy.sh` into real kernels, agrees with `decide()`;
`remove.sh` takes away exactly what it added; `apply --backend iptables` is gone (issue 14).

outguard applies only nftables; for an iptables host it writes an export (`ipsets`, `rules.v4`,
`rules.v6`, `deploy.sh`, `remove.sh`, `README.txt`). Here the export is written by `outguard
compile --target iptables --out DIR` (or in-process, for the big table) and loaded in the
topology's server namespace by `sh DIR/deploy.sh nft|legacy` — the real `ipset restore`,
`iptables-restore` and `ip6tables-restore`, as a user runs them. Every case of the shared
decision table (`tests/cases.py`) is then sent as a real TCP connect or UDP datagram as root or
nobody; the verdict the socket sees and the rule counter that moved (the packet counters of the
lines tagged `og:<rule>`, read with `iptables-save -c`) must be what `decide` says. Re-deploys
keep one jump and remove what an earlier deploy left; `remove.sh` leaves no OUTGUARD-* chain
and no og-* set, and every foreign rule, chain and set stays.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.export.iptables import export, fit
from outguard.export.names import for_export
from outguard.kernel import netns as ns
from outguard.kernel.cgroups import cgroup2_mount
from outguard.policy.load import load_text
from outguard.ruleset.decide import Decision
from tests.cases import CASE_POLICY, CASES, variant_policy
from tests.export import probes as tables
from tests.export.evaluation import compare, rows
from tests.export.evaluators import kernel
from tests.kernel.test_agreement import VARIANTS, _agrees, _batches, _decisions, _observed_verdict
from tests.kernel.topology import NflogReader, Probe, Topology, deltas

pytestmark = pytest.mark.kernel

IPT = ["nft", "legacy"]
_COUNTER_LINE = re.compile(r'^\[(\d+):(\d+)\] -A (OUTGUARD-\S+) .*?--comment "?og:([^" ]+)"? ')


def _tool(base: str, version: int, variant: str) -> str:
    """iptables-save, ip6tables-legacy-restore, ...: the tool deploy.sh uses for `variant`."""
    name = base if version == 4 else "ip6" + base.removeprefix("ip")
    head, _, tail = name.partition("-")
    return f"{head}-{variant}" + (f"-{tail}" if tail else "")


def _save(topo: Topology, version: int, variant: str, counters: bool = False) -> str:
    argv = [_tool("iptables-save", version, variant), "-t", "filter"]
    return ns.run(topo.server, argv + (["-c"] if counters else [])).stdout


def _counters(topo: Topology, variant: str) -> dict[str, int]:
    """Packets per decision key, summed over both families and every line tagged og:<key>."""
    out: dict[str, int] = {}
    for version in (4, 6):
        for line in _save(topo, version, variant, counters=True).splitlines():
            if m := _COUNTER_LINE.match(line):
                out[m.group(4)] = out.get(m.group(4), 0) + int(m.group(1))
    return out


def _ipsets(topo: Topology) -> list[str]:
    return sorted(ns.run(topo.server, ["ipset", "list", "-n"]).stdout.split())


def _write_export(topo: Topology, text: str, name: str = "export") -> Path:
    """The export as `compile --target iptables --out` writes it (in-process: no resolver)."""
    out = topo.state_dir.parent / name
    out.mkdir(exist_ok=True)
    for file, content in export(for_export(load_text(text, "cases-policy.yaml"))).files.items():
        (out / file).write_text(content)
    return out


def _sh(topo: Topology, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.run(topo.server, ["sh", str(script), *args], check=False, timeout=120)


def _deploy(topo: Topology, text: str, variant: str) -> Path:
    out = _write_export(topo, text)
    proc = _sh(topo, out / "deploy.sh", variant)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _counter(decision: Decision) -> str | None:
    return None if decision.rule.startswith("builtin:") else decision.rule


@pytest.mark.parametrize("variant", IPT)
@pytest.mark.parametrize(("mode", "default_action"), VARIANTS,
                         ids=[f"{m}-{a}" for m, a in VARIANTS])
def test_deployed_export_and_decide_agree_on_every_case(topology: Topology, variant: str,
                                                        mode: str, default_action: str) -> None:
    policy = variant_policy(mode, default_action)  # type: ignore[arg-type]
    decisions = _decisions(policy)
    topology.add_addresses(*{c.dst for c in CASES})
    _deploy(topology, policy, variant)

    problems: list[str] = []
    for batch in _batches(decisions):
        before = _counters(topology, variant)
        outcomes = topology.probe([Probe(CASES[i].dst, CASES[i].port, CASES[i].proto,
                                         CASES[i].uid) for i in batch])
        moved = deltas(before, _counters(topology, variant))
        expected = {c for i in batch if (c := _counter(decisions[i])) is not None}
        for i, outcome in zip(batch, outcomes, strict=True):
            case, decision = CASES[i], decisions[i]
            counter = _counter(decision)
            observed = _observed_verdict(case, outcome, default_action)
            got = moved.get(counter, 0) if counter else 0
            if not _agrees(decision.verdict, observed) or got != (1 if counter else 0):
                problems.append(
                    f"{case.id} ({case.note or '-'}): decide says {decision.verdict} by "
                    f"{decision.rule}; iptables-{variant}: {outcome} ({observed}), {counter} "
                    f"moved by {got}")
        stray = {k: v for k, v in moved.items() if k not in expected}
        if stray:
            problems.append(f"counters no case expects moved: {stray} "
                            f"(batch: {', '.join(CASES[i].id for i in batch)})")
    assert not problems, (f"{len(problems)} disagreement(s) between decide() and iptables-"
                          f"{variant} ({mode}, default {default_action}):\n" + "\n".join(problems))


@pytest.mark.parametrize("variant", IPT)
@pytest.mark.parametrize(("mode", "default_action", "tail"),
                         [("enforce", "drop", ""), ("enforce", "reject", " reject"),
                          ("audit", "drop", " audit")])
def test_nflog_prefixes_name_the_rule_and_the_action(topology: Topology, variant: str, mode: str,
                                                     default_action: str, tail: str) -> None:
    """Issue 17 §8: the monitor reads what the kernel did from the prefix's suffix
    (`compile.nft_verdict.log_prefix`); the export wrote `og:default` for reject and audit too."""
    topology.add_addresses("198.51.100.1", "203.0.113.201")
    _deploy(topology, variant_policy(mode, default_action), variant)  # type: ignore[arg-type]
    reader = NflogReader(topology.server, 0)
    try:
        topology.probe([Probe("198.51.100.1", 80), Probe("203.0.113.201", 80, "tcp", 65534)])
        records = reader.collect(1.0)
    finally:
        reader.close()
    got = {(r.prefix, r.dst) for r in records}
    assert (f"og:deny:attacker-net{tail}", "198.51.100.1") in got
    assert (f"og:default{tail}", "203.0.113.201") in got
    assert {r.uid for r in records if r.dst == "203.0.113.201"} <= {65534, None}


@pytest.mark.parametrize("variant", IPT)
def test_a_loud_flow_cannot_hide_a_new_one_from_the_log(topology: Topology, variant: str) -> None:
    """Issue 17 §8 (as issue 14 §5 for nftables): one log limit per rule let a flood to one
    destination silence the log of every other; the limit is per destination and port."""
    policy = CASE_POLICY.replace("log_rate: 1000/second", "log_rate: 2/minute")
    topology.add_addresses("203.0.113.201", "203.0.113.202")
    _deploy(topology, policy, variant)
    reader = NflogReader(topology.server, 0)
    try:
        for _ in range(4):  # 40 blocked datagrams to one destination: 2 logged (the burst: 5)
            topology.probe([Probe("203.0.113.201", 7, "udp")] * 10, timeout=0.05)
        loud = [r for r in reader.collect(0.5) if r.dst == "203.0.113.201"]
        topology.probe([Probe("203.0.113.202", 7, "udp")], timeout=0.05)
        records = reader.collect(1.0)
    finally:
        reader.close()
    assert 1 <= len(loud) <= 5, f"{len(loud)} of 40 logged: the flow's limit does not hold"
    assert ("og:default", "203.0.113.202") in {(r.prefix, r.dst) for r in records}, \
        "the new destination was not logged after another one's flood"


@contextlib.contextmanager
def _test_cgroups(out: Path) -> Iterator[None]:
    """xt_cgroup resolves `--path` when the rule is loaded: a unit's cgroup must exist then.
    The files' unit cgroups (system.slice/nginx.service) are moved below a test cgroup
    ogt-<hex> that exists while deploy.sh runs (no probe runs in it: it matches nothing, as
    the unit's cgroup would for the probes), then removed (the rule keeps the dead cgroup)."""
    mount = cgroup2_mount()
    assert mount is not None, "no cgroup2 hierarchy (DESIGN: test it, never skip)"
    root = Path(mount) / f"ogt-{secrets.token_hex(4)}"
    made: list[Path] = []
    for name in ("rules.v4", "rules.v6"):
        text = (out / name).read_text()
        for path in set(re.findall(r'--path "([^"]+)"', text)):
            made.append(root / path)
        (out / name).write_text(re.sub(r'--path "([^"]+)"', rf'--path "{root.name}/\1"', text))
    try:
        for path in made:
            path.mkdir(parents=True, exist_ok=True)
        yield
    finally:
        for sub in sorted(root.glob("**/"), key=lambda p: -len(p.parts)) if root.exists() else []:
            sub.rmdir()


@pytest.mark.parametrize("variant", IPT)
@pytest.mark.parametrize("policy", tables.eval_policy_names())
def test_evaluation_every_difference_is_named(topology: Topology, policy: str,
                                              variant: str) -> None:
    """Issue 17: the export, deployed by deploy.sh into a real kernel, against `decide` on the
    probe table of `policy` (tests/export/probes.py): every difference named by the report."""
    result = export(tables.exported(policy))
    out = topology.state_dir.parent / "eval"
    out.mkdir()
    for file, content in result.files.items():
        (out / file).write_text(content)
    with _test_cgroups(out):
        proc = _sh(topology, out / "deploy.sh", variant)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probes = kernel.kernel_probes(tables.probes(policy))
    model, _report, _warnings = fit(tables.exported(policy))
    started = time.monotonic()
    got = kernel.outcomes(probes, kernel.send(topology, probes), model, datetime.now(UTC))
    table = rows(tables.truth(policy), probes, got, tables.now(policy))
    problems = compare(result, table)
    assert not problems, f"{len(problems)} problem(s) of iptables-{variant} on {policy} " \
        f"({len(probes)} probes, {time.monotonic() - started:.1f} s):\n" + "\n".join(problems[:40])


FOREIGN_V4 = "-A OUTPUT -d 192.0.2.99/32 -p tcp -m tcp --dport 9 -j ACCEPT"
BIGGER_LIST = CASE_POLICY.replace('bad: [203.0.113.250, "2001:db8:dead::/48"]',
                                  'bad: [203.0.113.250, 203.0.113.251, "2001:db8:dead::/48"]')


@pytest.mark.parametrize("variant", IPT)
def test_redeploy_and_remove_touch_only_outguards_chains_and_sets(topology: Topology,
                                                                  variant: str) -> None:
    server = topology.server
    ipt = _tool("iptables", 4, variant)
    ns.run(server, [ipt, "-w", "-N", "OTHER-CHAIN"])
    ns.run(server, [ipt, "-w", "-A", "OTHER-CHAIN", "-j", "RETURN"])
    ns.run(server, [ipt, "-w", *FOREIGN_V4.split()])
    ns.run(server, ["ipset", "create", "other-set", "hash:ip"])
    _deploy(topology, CASE_POLICY, variant)
    first_sets = set(_ipsets(topology))
    _deploy(topology, variant_policy("audit", "drop"), variant)  # no OUTGUARD-D<i>: they go
    assert not re.search(r":OUTGUARD-D\d", _save(topology, 4, variant))
    _deploy(topology, variant_policy("enforce", "reject"), variant)
    out = _deploy(topology, BIGGER_LIST.replace("drop", "reject"), variant)  # @bad: a new set
    saved = _save(topology, 4, variant)
    assert FOREIGN_V4 in saved.splitlines() and "-A OTHER-CHAIN -j RETURN" in saved.splitlines()
    for version in (4, 6):
        assert _save(topology, version, variant).count("-j OUTGUARD-OUT") == 1
    assert set(re.findall(r"^:(OUTGUARD-\S+)", saved, re.M)) == {
        "OUTGUARD-OUT", "OUTGUARD-DEFAULT", "OUTGUARD-REJECT",
        *(f"OUTGUARD-D{i}" for i in range(6))}
    now_sets = set(_ipsets(topology))
    written = set(re.findall(r"^create (\S+) ", (out / "ipsets").read_text(), re.M))
    assert now_sets == written | {"other-set"}, "an earlier deploy's set was left"
    assert first_sets - now_sets, "the changed list did not get a new set"

    removed = _sh(topology, out / "remove.sh", variant)
    assert removed.returncode == 0, removed.stderr
    saved = _save(topology, 4, variant)
    assert FOREIGN_V4 in saved.splitlines() and "-A OTHER-CHAIN -j RETURN" in saved.splitlines()
    assert "OUTGUARD" not in saved and "OUTGUARD" not in _save(topology, 6, variant)
    assert _ipsets(topology) == ["other-set"]
    again = _sh(topology, out / "remove.sh", variant)  # nothing left: still succeeds
    assert again.returncode == 0 and again.stdout == "", again.stderr


def test_compile_writes_an_export_that_deploys_and_removes(topology: Topology) -> None:
    """The README's path: compile --target iptables --out DIR, sh DIR/deploy.sh, remove.sh."""
    policy = topology.write_policy(CASE_POLICY)
    out = topology.state_dir.parent / "ipt"
    proc = subprocess.run([sys.executable, "-m", "outguard", "compile", str(policy), "--target",
                           "iptables", "--out", str(out)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ipsets", "rules.v4", "rules.v6", "deploy.sh", "remove.sh", "README.txt"])
    assert (out / "deploy.sh").stat().st_mode & 0o111
    topology.add_addresses("198.51.100.1", "203.0.113.10", "203.0.113.77", "2001:db8:bad::1")
    probes = (Probe("198.51.100.1", 80), Probe("203.0.113.10", 443), Probe("203.0.113.77", 80),
              Probe("2001:db8:bad::1", 443))
    assert topology.passes(*probes) == [True, True, True, True]  # nothing deployed yet

    deployed = ns.run(topology.server, [str(out / "deploy.sh")], check=False, timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed" in deployed.stdout
    assert topology.passes(*probes) == [False, True, False, False]

    removed = ns.run(topology.server, [str(out / "remove.sh")], check=False, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert topology.passes(*probes) == [True, True, True, True]
    for version in (4, 6):
        for variant in IPT:
            assert "OUTGUARD" not in _save(topology, version, variant)
    assert _ipsets(topology) == []


@pytest.mark.parametrize("backend", ["iptables", "iptables-nft", "iptables-legacy"])
def test_apply_with_an_iptables_backend_is_refused_with_the_way_to_deploy(
        topology: Topology, backend: str) -> None:
    path = topology.write_policy(CASE_POLICY)
    proc = topology.cli("apply", str(path), "--backend", backend)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--target iptables --out DIR" in proc.stderr and "deploy.sh" in proc.stderr
    assert proc.stdout == ""
    for version in (4, 6):
        for variant in IPT:
            assert "OUTGUARD" not in _save(topology, version, variant)
    assert topology.tables() == []


@pytest.mark.parametrize("policy", ["cases", "names-in-lists-dns", "big-list"])
def test_the_files_as_netfilter_persistent_loads_them_at_boot(topology: Topology,
                                                             policy: str) -> None:
    """README.txt's other way: the files copied to /etc/iptables/{ipsets,rules.v4,rules.v6},
    loaded at boot as netfilter-persistent and its ipset plugin do (the sets, then each rules
    file with a plain `iptables-restore`, which replaces the whole filter table)."""
    result = export(tables.exported(policy))
    out = topology.state_dir.parent / "boot"
    out.mkdir()
    for file, content in result.files.items():
        (out / file).write_text(content)
    for argv, file in ((["ipset", "-exist", "restore"], "ipsets"),
                       (["iptables-restore"], "rules.v4"), (["ip6tables-restore"], "rules.v6")):
        proc = ns.run(topology.server, [*argv, "-f", str(out / file)] if argv[0] == "ipset"
                      else [*argv, str(out / file)], check=False)
        assert proc.returncode == 0, f"{argv[0]}: {proc.stderr}"
    probes = kernel.kernel_probes(tables.probes(policy))
    model, _report, _warnings = fit(tables.exported(policy))
    got = kernel.outcomes(probes, kernel.send(topology, probes), model, datetime.now(UTC))
    problems = compare(result, rows(tables.truth(policy), probes, got, tables.now(policy)))
    assert not problems, "\n".join(problems[:40])
