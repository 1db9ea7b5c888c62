"""The ufw export, run by the real ufw in a test namespace, agrees with `decide()`.

ufw keeps its state in /etc/ufw and /etc/default/ufw. `ip netns exec NS` bind-mounts
/etc/netns/NS/<x> over /etc/<x> in a private mount namespace, so each test gives ufw its own
copies there (with IPT_SYSCTL pointing at an empty file: ufw would otherwise apply its sysctl
settings). Every ufw command runs through a guard that refuses to start ufw unless it sees the
test's marker files in both directories: a missing bind mount can never reach the machine's own
ufw. The test also checks that the machine's /etc/ufw and /etc/default/ufw are byte for byte
unchanged afterwards.

What ufw enforces is `export.ufw.fit(ruleset)` (no owner match, no ICMP rules, no expiry): the
kernel must agree with `decide()` on that ruleset for every case of tests/cases.py, and every
case where it differs from the policy as written must be decided by a rule the fidelity report
calls approximated or dropped.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.export.ufw import export, fit
from outguard.kernel import netns as ns
from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.lower import lower
from tests.cases import CASES, variant_policy
from tests.kernel.test_agreement import VARIANTS, _agrees, _observed_verdict
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

Ufw = Callable[..., subprocess.CompletedProcess[str]]
HOST_FILES = [Path("/etc/default/ufw"), *sorted(Path("/etc/ufw").glob("*"))]


def _digest() -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in HOST_FILES if p.is_file()}


@contextmanager
def ufw_in(netns: str) -> Iterator[Ufw]:
    if shutil.which("ufw") is None:
        pytest.skip("ufw is not installed (./dev setup installs it)")
    assert netns.startswith("ogt-")
    etc = Path("/etc/netns") / netns
    assert not etc.exists(), f"{etc} exists already"
    marker = f".outguard-test-{netns}"
    etc.mkdir(parents=True)
    try:
        shutil.copytree("/etc/ufw", etc / "ufw", symlinks=True)
        shutil.copytree("/etc/default", etc / "default", symlinks=True)
        (etc / "ufw" / "outguard-empty-sysctl.conf").write_text("")
        defaults = etc / "default" / "ufw"
        defaults.write_text("\n".join(
            "IPT_SYSCTL=/etc/ufw/outguard-empty-sysctl.conf" if ln.startswith("IPT_SYSCTL=")
            else ln for ln in defaults.read_text().splitlines()) + "\n")
        for d in ("ufw", "default"):
            (etc / d / marker).touch()
        assert not (Path("/etc/ufw") / marker).exists()
        guard = (f"test -f /etc/ufw/{marker} && test -f /etc/default/{marker} "
                 "|| { echo 'no private /etc/ufw: refusing to run ufw' >&2; exit 99; }; "
                 'exec ufw "$@"')

        def ufw(*args: str) -> subprocess.CompletedProcess[str]:
            return ns.run(netns, ["sh", "-c", guard, "ufw", *args], timeout=60)
        yield ufw
    finally:
        shutil.rmtree(etc)


def _run_script(ufw: Ufw, script: str) -> None:
    for line in script.splitlines():
        if line.startswith("ufw "):
            ufw(*shlex.split(line)[1:])
    ufw("--force", "enable")


def test_guard_refuses_without_the_private_etc(netns: str) -> None:
    before = _digest()
    with ufw_in(netns) as ufw:
        shutil.rmtree(Path("/etc/netns") / netns / "default")  # as if the bind mount failed
        proc = ns.run(netns, ["sh", "-c", "test -f /etc/default/.outguard-test-" + netns +
                              " || exit 99"], check=False)
        assert proc.returncode == 99
        with pytest.raises(Exception, match="refusing to run ufw"):
            ufw("status")
        (Path("/etc/netns") / netns / "default").mkdir()
    assert _digest() == before


@pytest.mark.parametrize(("mode", "default_action"), VARIANTS,
                         ids=[f"{m}-{a}" for m, a in VARIANTS])
def test_ufw_and_decide_agree_on_every_case(topology: Topology, mode: str,
                                            default_action: str) -> None:
    before = _digest()
    rs = lower(load_text(variant_policy(mode, default_action), "cases-policy.yaml"))  # type: ignore[arg-type]
    result = export(rs)
    fitted, _report, _warnings = fit(rs)
    inexact = {f.rule for f in result.fidelity if f.level != "exact"}
    how = {f.rule: f.how for f in result.fidelity}
    topology.add_addresses(*{c.dst for c in CASES})
    with ufw_in(topology.server) as ufw:
        _run_script(ufw, result.files["outguard-ufw.sh"])
        outcomes = topology.probe([Probe(c.dst, c.port, c.proto, c.uid) for c in CASES])
    assert _digest() == before, "the machine's own ufw files changed"

    now = datetime.now(UTC)
    problems = []
    for case, outcome in zip(CASES, outcomes, strict=True):
        flow = Flow(dst=case.dst, port=case.port, proto=case.proto, uid=case.uid, gid=case.gid)
        enforced, written = decide(fitted, flow, now), decide(rs, flow, now)
        observed = _observed_verdict(case, outcome, default_action)
        if (observed == "drop" and enforced.verdict == "reject" and ":" in case.dst
                and case.proto == "tcp" and "IPv6 TCP" in how.get(enforced.rule, "")):
            observed = "reject"  # measured and reported: ufw's IPv6 TCP reject looks like a drop
        if not _agrees(enforced.verdict, observed):
            problems.append(f"{case.id}: decide (what ufw can enforce) says {enforced.verdict} "
                            f"by {enforced.rule}; ufw: {outcome}")
        if written.verdict != enforced.verdict and not {written.rule, enforced.rule} & inexact:
            problems.append(f"{case.id}: ufw differs from the policy ({written.rule} → "
                            f"{enforced.rule}) but the report calls both exact")
    assert not problems, "\n".join(problems)
    differ = [c for c in CASES if decide(rs, Flow(dst=c.dst, port=c.port, proto=c.proto,
                                                  uid=c.uid, gid=c.gid), now).verdict
              != decide(fitted, Flow(dst=c.dst, port=c.port, proto=c.proto, uid=c.uid,
                                     gid=c.gid), now).verdict]
    if mode == "enforce":
        assert differ, "the case table should show what ufw cannot express (owners)"
