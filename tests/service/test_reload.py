"""The agent's reload with an in-memory packet source (no kernel): the applied snapshot is
written as `apply` writes it (`StateDir.write`), the agent follows it; a policy that does not
load changes nothing and is reported; what the agent follows when nothing is applied."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from outguard.monitor.agent import MemorySource
from outguard.service import applied
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.state import Snapshot, StateDir
from tests.monitor.events import packet
from tests.monitor.test_agent import FakeProcs

SINK = "version: 1\ndeny:\n  - name: bad\n    to: [203.0.113.0/24]\nalerts:\n  - {sink}\n"


def write_applied(state_dir: Path, text: str, source: Path) -> str:
    """What `apply` records (the kernel part left out): the agent reads nothing else."""
    state = StateDir(state_dir)
    state.ensure()
    snap_id = uuid.uuid4().hex
    state.write(Snapshot(policy_hash=snap_id, applied_at="2026-11-21T00:00:00+00:00",
                         mode="enforce", source=str(source), inventory={}, counters={},
                         snapshot_id=snap_id), text, b"[]")
    return snap_id


@contextmanager
def agent_on(tmp_path: Path, **kw: object) -> Iterator[tuple[AgentHandle, MemorySource]]:
    source = MemorySource()
    kw.setdefault("policy", None)
    opts = AgentOptions(state_dir=tmp_path / "state", apply=False, **kw)  # type: ignore[arg-type]
    with AgentHandle(opts, source=source, attributor=FakeProcs()) as agent:
        yield agent, source


def push(agent: AgentHandle, source: MemorySource, dst: str) -> None:
    agent.call_soon(lambda: source.push(packet(dst, 1389, rule="deny:bad")))


def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_policy_that_does_not_load_changes_nothing_and_is_reported(tmp_path: Path) -> None:
    out = io.StringIO()
    policy = tmp_path / "policy.yaml"
    write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), policy)
    with agent_on(tmp_path, stdout=out) as (agent, source):
        assert agent.reloads.serving.startswith("policy ")
        push(agent, source, "203.0.113.1")
        until(lambda: out.getvalue().count("\n") == 1)
        # a new apply whose list file has gone away by the time the agent reads it
        write_applied(tmp_path / "state", SINK.format(sink="stdout: text") + "lists:\n"
                      "  gone: {file: missing.txt}\n", policy)
        stats = agent.wait_for_reloads(1)
        assert (stats.ok, stats.failed) == (0, 1) and "lists.gone.file" in (stats.last_error or "")
        metrics = agent.running.metrics
        assert metrics.value("outguard_policy_reloads_total", result="failed") == 1
        assert metrics.value("outguard_policy_last_reload_successful") == 0
        # the old sink is still in service: it carried the failure, and the next incident
        push(agent, source, "203.0.113.2")
        until(lambda: out.getvalue().count("\n") == 3)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [a["signature"] for a in lines] == ["jndi-callback", "policy-reload-failed",
                                                   "jndi-callback"]
        assert lines[1]["severity"] == "high" and "lists.gone.file" in lines[1]["title"]
        # fixed by the next apply: switched
        write_applied(tmp_path / "state", SINK.format(sink="stdout: text"), policy)
        until(lambda: agent.reloads.ok == 1)
        assert metrics.value("outguard_policy_last_reload_successful") == 1
        push(agent, source, "203.0.113.3")
        until(lambda: out.getvalue().count("\n") == 4)
        assert out.getvalue().splitlines()[-1].startswith("CRITICAL possible JNDI callback")


def test_a_removed_policy_keeps_the_agent_serving_the_last_one(tmp_path: Path) -> None:
    out = io.StringIO()
    write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), tmp_path / "p.yaml")
    with agent_on(tmp_path, stdout=out) as (agent, source):
        StateDir(tmp_path / "state").clear()  # what `outguard remove` leaves
        time.sleep(3 * applied.POLL_S)
        push(agent, source, "203.0.113.1")
        until(lambda: out.getvalue().count("\n") == 1)
        assert (agent.reloads.ok, agent.reloads.failed) == (0, 0)


def test_nothing_applied_then_an_apply(tmp_path: Path) -> None:
    """`run --no-apply` before anything is applied: the monitor alone (or the file given), then
    what gets applied."""
    out = io.StringIO()
    with agent_on(tmp_path, stdout=out) as (agent, source):
        assert agent.reloads.serving.startswith("no policy")
        push(agent, source, "203.0.113.1")
        until(lambda: agent.incidents() != [])
        assert out.getvalue() == ""  # no sinks yet
        write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), tmp_path / "p.yaml")
        until(lambda: agent.reloads.ok == 1)
        push(agent, source, "203.0.113.2")
        until(lambda: out.getvalue().count("\n") == 1)
    file = tmp_path / "given.yaml"
    file.write_text(SINK.format(sink="stdout: text"))
    with agent_on(tmp_path / "other", stdout=out, policy=file) as (agent, _source):
        assert agent.reloads.serving.startswith(f"policy file {file}")


def test_sighup_reads_signature_files_again(tmp_path: Path) -> None:
    sigs = tmp_path / "sigs.yaml"
    sigs.write_text("version: 1\nsignatures: []\n")
    write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), tmp_path / "p.yaml")
    with agent_on(tmp_path, stdout=io.StringIO(), signatures=[sigs]) as (agent, source):
        sigs.write_text("version: 1\ndisable: [jndi-callback]\n")
        agent.reload()
        assert agent.wait_for_reloads(1).ok == 1
        push(agent, source, "203.0.113.1")
        until(lambda: agent.incidents() != [])
        assert agent.incidents()[0].signature != "jndi-callback"


def test_reading_the_applied_snapshot_while_an_apply_replaces_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert applied.read_applied(state) is None and applied.stamp(state) is None
    first = write_applied(state, "version: 1\n", tmp_path / "a.yaml")
    stamp = applied.stamp(state)
    real = StateDir.policy_text
    calls = []

    def racing(self: StateDir, which: str = "applied") -> str | None:
        if not calls:  # an apply lands between the state file and the policy text
            calls.append(write_applied(state, "version: 1\nmode: audit\n", tmp_path / "b.yaml"))
        return real(self, which)

    StateDir.policy_text = racing  # type: ignore[method-assign]
    try:
        got = applied.read_applied(state)
    finally:
        StateDir.policy_text = real  # type: ignore[method-assign]
    assert got is not None and got.key == calls[0] != first
    assert got.text == "version: 1\nmode: audit\n" and got.source.endswith("b.yaml")
    assert applied.stamp(state) != stamp


def test_the_policy_given_is_compared_with_what_is_applied(tmp_path: Path, caplog: object) -> None:
    import logging

    file = tmp_path / "given.yaml"
    file.write_text(SINK.format(sink="stdout: text"))
    write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), file)
    with caplog.at_level(logging.WARNING), agent_on(tmp_path, policy=file,  # type: ignore[attr-defined]
                                                    stdout=io.StringIO()) as (agent, _s):
        assert agent.reloads.serving.startswith("policy ")
    assert "is not what is applied" in caplog.text  # type: ignore[attr-defined]



def test_a_reload_that_turns_learning_on_says_it_waits_for_the_next_start(
        tmp_path: Path, caplog: object) -> None:
    # a newcomer's trial: `learn: true` applied to a running agent was "reloaded" and nothing
    # more, and `flows` said "no flows learned" until the agent was restarted
    import logging

    policy = tmp_path / "policy.yaml"
    write_applied(tmp_path / "state", SINK.format(sink="stdout: json"), policy)
    with caplog.at_level(logging.WARNING), agent_on(tmp_path) as (agent, _source):  # type: ignore[attr-defined]
        write_applied(tmp_path / "state", SINK.format(sink="stdout: json") + "learn: true\n",
                      policy)
        stats = agent.wait_for_reloads(1)
        assert stats.ok == 1, stats.last_error
    said = [r.getMessage() for r in caplog.records]  # type: ignore[attr-defined]
    assert any("learn: true" in m and "next start" in m for m in said), said
