"""The agent over TLS against w20a's real `fleet serve --tls-cert`: verified against
`--fleet-ca` it enrols, follows a push and sends its incidents; without the CA (the system's
CAs do not know the server) it never enrols, says why, and its host keeps enforcing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.agentlab import BLOCKED_NET, AgentLab, policy_text
from tests.fleet.pgserver import available
from tests.kernel.conftest import kernel_skip_reason

pytestmark = pytest.mark.kernel


@pytest.fixture
def lab() -> Iterator[AgentLab]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    if why := available():
        pytest.fail(why)
    built = AgentLab(2, tls=True).build()
    try:
        yield built
    finally:
        built.close()


def test_tls_with_and_without_the_fleet_ca(lab: AgentLab) -> None:
    good, bad = lab.hosts
    p0 = lab.root / "p0.yaml"
    p0.write_text(policy_text("p0"))
    lab.start_agent(good, p0)
    lab.start_agent(bad, p0, ca=False)
    lab.wait("the host with the CA enrolled", lambda: lab.sql(
        "SELECT name FROM hosts") == [(good.name,)], 60)
    p1 = lab.root / "p1.yaml"
    p1.write_text(policy_text("p1"))
    lab.fleet_cli("push", str(p1), "--to", good.name, "--canary", "0", "--waves", "100%",
                  "--soak", "0")
    lab.wait("version 1 applied over TLS", lambda: good.follow().get("version") == 1, 60)
    lab.burst(good, 0, 5)
    lab.wait("its incidents sent", lambda: good.outbox_books()["incidents"]["sent"] >= 5, 30)
    rows = lab.sql("SELECT record->>'dst' FROM incidents")
    assert {r[0] for r in rows} >= {f"{BLOCKED_NET}{k}" for k in range(1, 6)}
    # the other one: refused by its own verification, never enrolled, still enforcing p0
    lab.wait("the certificate error said", lambda: "CERTIFICATE_VERIFY_FAILED" in
             bad.log.read_text(errors="replace"), 30)
    assert lab.sql("SELECT count(*) FROM hosts WHERE name = %s", bad.name) == [(0,)]
    assert not (bad.state / "fleet" / "credential.json").exists()
    assert (bad.state / "applied" / "policy.yaml").read_text() == p0.read_text()
