"""nft_tx: the full and delta transactions, against a recorded inventory."""

from __future__ import annotations

from typing import Any

import pytest

from outguard.nftables import nft_tx
from outguard.nftables.model import Compiled
from outguard.nftables.nft_tx import Inventory
from tests.nftables.helpers import GOLDEN, compiled_file, compiled_of

Cmd = dict[str, Any]

OLD = """\
version: 1
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
  - name: gone-deny
    to: [198.51.100.7]
    ports: [25]
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
    proto: tcp
  - name: mirrors
    to: ["@mirrors"]
    ports: [80]
    proto: tcp
  - name: old-feed
    to: ["@old"]
lists:
  mirrors: [203.0.113.200, 203.0.113.208/29]
  old: [203.0.113.99]
"""

NEW = """\
version: 1
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
allow:
  - name: web
    to: [203.0.113.10, 203.0.113.11]
    ports: [443]
    proto: tcp
  - name: mirrors
    to: ["@mirrors"]
    ports: [80]
    proto: tcp
  - name: new-rule
    to: ["2001:db8:1::/48"]
lists:
  mirrors: [203.0.113.200, 203.0.113.208/29]
options:
  forward: true
"""


def _kinds(cmds: list[Cmd]) -> list[tuple[str, str, str]]:
    """(verb, kind, name) of each command; rules by their chain."""
    out = []
    for cmd in cmds:
        ((verb, obj),) = cmd.items()
        ((kind, body),) = obj.items()
        out.append((verb, kind, body.get("name") or body.get("chain", "")))
    return out


@pytest.fixture(scope="module")
def old() -> Compiled:
    return compiled_of(OLD)


@pytest.fixture(scope="module")
def new() -> Compiled:
    return compiled_of(NEW)


@pytest.fixture(scope="module")
def delta(old: Compiled, new: Compiled) -> list[tuple[str, str, str]]:
    return _kinds(nft_tx.delta(new, Inventory.of(old)))


def test_full_replaces_the_table(new: Compiled) -> None:
    kinds = _kinds(nft_tx.full(new))
    assert kinds[:3] == [("add", "table", "outguard"), ("delete", "table", "outguard"),
                         ("add", "table", "outguard")]
    assert ("add", "counter", "default") in kinds
    assert {n for v, k, n in kinds if k == "chain"} == set(new.chains)
    assert {n for v, k, n in kinds if k in ("set", "map")} == set(new.sets)
    assert {n for v, k, n in kinds if k == "counter"} == set(new.counters)
    assert sum(1 for _v, k, _n in kinds if k == "rule") == \
        sum(len(c.rules) for c in new.chains.values())


def test_full_declares_before_use(new: Compiled) -> None:
    """Counters and chains exist before the map elements and rules that refer to them."""
    kinds = _kinds(nft_tx.full(new))
    first_rule = next(i for i, (_v, k, _n) in enumerate(kinds) if k == "rule")
    first_element = next(i for i, (_v, k, _n) in enumerate(kinds) if k == "element")
    last_chain = max(i for i, (_v, k, _n) in enumerate(kinds) if k == "chain")
    last_counter = max(i for i, (_v, k, _n) in enumerate(kinds) if k == "counter")
    assert last_counter < last_chain < first_element < first_rule
    for i, (_verb, kind, name) in enumerate(kinds):
        if kind == "element":
            assert kinds[i - 1][2] == name and kinds[i - 1][1] in ("set", "map")


def test_delta_never_touches_the_table_or_the_ruleset(delta: list[tuple[str, str, str]]) -> None:
    assert delta[0] == ("add", "table", "outguard")
    assert ("delete", "table", "outguard") not in delta
    assert all(k != "table" for _v, k, _n in delta[1:])


def _changed(old: Compiled, new: Compiled) -> list[str]:
    """Chains in both whose rules differ, compared rule by rule (not by digest)."""
    return [n for n in old.chains if n in new.chains
            and [(r.expr, r.comment) for r in old.chains[n].rules]
            != [(r.expr, r.comment) for r in new.chains[n].rules]]


def _switch(old: Compiled, new: Compiled, before: Inventory | None = None) -> list[tuple[str, str, str]]:
    return _kinds(nft_tx.delta_phases(new, before or Inventory.of(old)).switch)


def test_delta_flushes_only_the_chains_whose_rules_changed(
        old: Compiled, new: Compiled, delta: list[tuple[str, str, str]]) -> None:
    flushes = [n for v, k, n in _switch(old, new) if v == "flush"]
    changed = _changed(old, new)
    assert flushes == changed
    assert "allow" in changed and "output" not in changed  # a map changed; the hook did not
    kept = [n for n in old.chains if n in new.chains and n not in changed]
    assert kept  # unchanged chains exist, and keep their rules
    assert not {n for _v, k, n in delta if k == "rule"} & set(kept)


def test_delta_flushes_before_it_refills(old: Compiled, new: Compiled) -> None:
    delta = _switch(old, new)
    first_flush = next(i for i, (v, _k, _n) in enumerate(delta) if v == "flush")
    first_rule = next(i for i, (_v, k, _n) in enumerate(delta) if k == "rule")
    last_flush = max(i for i, (v, _k, _n) in enumerate(delta) if v == "flush")
    assert first_flush < first_rule and last_flush < first_rule


def test_a_chain_without_a_recorded_digest_is_always_refilled(old: Compiled,
                                                              new: Compiled) -> None:
    # an inventory recorded by an older outguard has no digests: nothing is assumed unchanged
    before = Inventory.of(old)
    before.rules = {}
    kinds = _switch(old, new, before)
    assert [n for v, _k, n in kinds if v == "flush"] == [n for n in old.chains if n in new.chains]
    assert [n for _v, k, n in kinds if k == "rule"] == \
        [c.name for c in new.chains.values() for _r in c.rules]


def test_a_rule_change_inside_a_chain_changes_its_digest() -> None:
    # the group chain of `web` keeps its name (made from rule names) while its ports change
    before = compiled_of("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    after = compiled_of("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [8443]}\n")
    same = [n for n in before.chains if n in after.chains and n.startswith("g_")]
    assert same
    kinds = _kinds(nft_tx.delta(after, Inventory.of(before)))
    assert set(same) <= {n for v, _k, n in kinds if v == "flush"}
    assert set(same) <= {n for _v, k, n in kinds if k == "rule"}


def test_delta_deletes_what_is_gone(old: Compiled, new: Compiled,
                                    delta: list[tuple[str, str, str]]) -> None:
    deleted = {(k, n) for v, k, n in delta if v == "delete"}
    gone_sets = set(old.sets) - set(new.sets)
    gone_chains = set(old.chains) - set(new.chains)
    gone_counters = set(old.counters) - set(new.counters)
    assert gone_sets and gone_chains and gone_counters  # the test policies make sure of it
    assert {"deny.gone-deny", "allow.old-feed"} <= gone_counters
    assert "v_deny_gone-deny" in gone_chains
    assert deleted == ({("map" if n.startswith("m_") else "set", n) for n in gone_sets}
                       | {("chain", n) for n in gone_chains}
                       | {("counter", n) for n in gone_counters})


def test_delta_deletes_maps_before_sets_and_chains(delta: list[tuple[str, str, str]]) -> None:
    """A map's elements `goto` group chains: the map must go before the chains it names."""
    order = [(k, n) for v, k, n in delta if v == "delete"]
    kinds = [k for k, _n in order]
    assert "map" in kinds and "set" in kinds and "chain" in kinds
    last_map = max(i for i, k in enumerate(kinds) if k == "map")
    first_set = min(i for i, k in enumerate(kinds) if k == "set")
    first_chain = min(i for i, k in enumerate(kinds) if k == "chain")
    assert last_map < first_set < first_chain
    # counters go after the rules that used them were flushed
    first_counter = min(i for i, k in enumerate(kinds) if k == "counter")
    assert first_counter > first_chain


def test_delta_creates_only_new_objects(old: Compiled, new: Compiled,
                                        delta: list[tuple[str, str, str]]) -> None:
    created = [(k, n) for v, k, n in delta if v == "add" and k in ("set", "map", "chain",
                                                                   "counter")]
    assert {n for k, n in created if k in ("set", "map")} == set(new.sets) - set(old.sets)
    assert {n for k, n in created if k == "chain"} == set(new.chains) - set(old.chains)
    assert {n for k, n in created if k == "counter"} == set(new.counters) - set(old.counters)
    assert ("chain", "forward") in created  # forward: true adds the base chain
    # the unchanged list `mirrors` keeps its kernel sets: not declared, no elements added
    kept = [n for n in new.sets if n.startswith("l_mirrors_")]
    assert kept and all(n in old.sets for n in kept)
    assert not any(n in kept for v, k, n in delta if k in ("set", "element"))
    # per-rule counters that still exist keep counting
    assert ("counter", "allow.web") not in created
    assert ("counter", "default") not in created


def test_delta_adds_the_refilled_rules_after_the_objects_and_deletes_after_the_rules(
        old: Compiled, new: Compiled, delta: list[tuple[str, str, str]]) -> None:
    rules = [n for _v, k, n in delta if k == "rule"]
    refilled = set(_changed(old, new)) | (set(new.chains) - set(old.chains))
    assert rules == [c.name for c in new.chains.values() if c.name in refilled for _r in c.rules]
    first_rule = next(i for i, (_v, k, _n) in enumerate(delta) if k == "rule")
    last_rule = max(i for i, (_v, k, _n) in enumerate(delta) if k == "rule")
    assert all(k == "rule" for _v, k, _n in delta[first_rule:last_rule + 1])
    tail = delta[last_rule + 1:]
    gone = nft_tx.leftovers(new, Inventory.of(old)).chains
    assert tail and [n for v, _k, n in tail if v == "flush"] == gone
    assert all(v in ("flush", "delete") for v, _k, _n in tail)


def test_a_delta_deletes_old_objects_only_after_the_rules_switched(old: Compiled,
                                                                   new: Compiled) -> None:
    # Kernel 6.18: deleting a map deactivates its elements at once for the next generation; a
    # packet still walking the old rules across the commit then misses in it and is dropped
    # (tests/kernel/test_apply_safety.py, the 100 re-applies, found it on a loaded machine).
    phases = nft_tx.delta_phases(new, Inventory.of(old))
    switch, cleanup = _kinds(phases.switch), _kinds(phases.cleanup)
    assert {v for v, _k, _n in switch} == {"add", "flush"}
    assert {k for v, k, _n in switch if v == "add"} == {"table", "rule"}
    assert not {n for v, _k, n in switch if v == "flush"} & set(nft_tx.leftovers(new, Inventory.of(old)).chains)
    assert cleanup[0] == ("add", "table", "outguard")
    gone = nft_tx.leftovers(new, Inventory.of(old))
    assert gone.sets and gone.chains and gone.counters
    # the gone chains are emptied first: their rules still use old sets and counters, which the
    # kernel refuses to delete while a rule refers to them
    flushed = [n for v, _k, n in cleanup if v == "flush"]
    assert flushed == gone.chains
    assert [v for v, _k, _n in cleanup[1:]] == ["flush"] * len(flushed) + \
        ["delete"] * (len(cleanup) - 1 - len(flushed))
    deleted = {n for v, _k, n in cleanup if v == "delete"}
    assert deleted == set(gone.sets) | set(gone.chains) | set(gone.counters)
    assert phases.all == phases.prepare + phases.switch[1:] + phases.cleanup[1:]


def test_delta_against_itself_changes_nothing(new: Compiled) -> None:
    assert _kinds(nft_tx.delta(new, Inventory.of(new))) == [("add", "table", "outguard")]


def test_delta_against_an_empty_inventory_creates_everything(new: Compiled) -> None:
    full = _kinds(nft_tx.full(new))[3:]
    got = _kinds(nft_tx.delta(new, Inventory()))[1:]
    # the same commands; the sets the packet path fills (learning's) come in the switch, with
    # the rules that fill them, after the other objects: still before any rule
    dynamic = {n for n, s in new.sets.items() if s.element_timeout is not None}
    assert dynamic
    assert sorted(got) == sorted(full)
    assert [k for k in got if k[2] not in dynamic] == [k for k in full if k[2] not in dynamic]
    first_rule = next(i for i, k in enumerate(got) if k[1] == "rule")
    assert all(i < first_rule for i, k in enumerate(got) if k[2] in dynamic)


def test_sets_the_packet_path_fills_are_made_in_the_switch(new: Compiled) -> None:
    """nft gives a set the `dynamic` flag only when the rule that fills it comes in the same
    transaction (JSON cannot declare it), and the kernel refuses an `update @set` rule into a
    set made without it: a delta that made learning's sets in `prepare` was refused, and apply
    replaced the whole table, emptying the DNS-filled sets (tests/kernel/test_dns_sets_kept)."""
    learning = compiled_of("learn: true\n" + NEW)
    phases = nft_tx.delta_phases(learning, Inventory.of(new))
    dynamic = {n for n, s in learning.sets.items() if s.element_timeout is not None} \
        - set(new.sets)
    assert dynamic
    made_early = {n for _v, k, n in _kinds(phases.prepare) if k == "set"}
    made_in_switch = {n for v, k, n in _kinds(phases.switch) if (v, k) == ("add", "set")}
    assert dynamic <= made_in_switch and not dynamic & made_early
    # a refused switch made none of them: the undo deletes only what `prepare` made
    assert not dynamic & {n for v, _k, n in _kinds(phases.undo) if v == "delete"}
    # and a rollback to such a policy does the same
    stored = nft_tx.stored_phases(nft_tx.full(learning), Inventory.of(new))
    assert dynamic <= {n for v, k, n in _kinds(stored.switch) if (v, k) == ("add", "set")}
    assert not dynamic & {n for _v, k, n in _kinds(stored.prepare) if k == "set"}


def test_delta_of_unchanged_list_files_keeps_their_sets() -> None:
    before = compiled_file(GOLDEN / "lists.yaml")
    kinds = _kinds(nft_tx.delta(before, Inventory.of(before)))
    assert not any(k in ("set", "map", "element") for _v, k, _n in kinds)


def test_inventory_round_trip(new: Compiled) -> None:
    inv = Inventory.of(new)
    assert set(inv.rules) == set(new.chains)
    assert Inventory.from_json(inv.to_json()) == inv
    assert Inventory.from_json({"chains": ["output"], "rules": None}).rules == {}
    assert Inventory.from_json({}) == Inventory()


def test_remove_deletes_only_the_own_table() -> None:
    assert nft_tx.remove() == [{"add": {"table": {"family": "inet", "name": "outguard"}}},
                               {"delete": {"table": {"family": "inet", "name": "outguard"}}}]


def test_document_wraps_commands() -> None:
    doc = nft_tx.document([{"add": {"table": {"family": "inet", "name": "outguard"}}}])
    assert doc == {"nftables": [{"metainfo": {"json_schema_version": 1}},
                                {"add": {"table": {"family": "inet", "name": "outguard"}}}]}


def test_empty_sets_get_no_element_command() -> None:
    compiled = compiled_of("version: 1\nallow:\n  - {name: a, to: ['@l']}\n"
                           "lists:\n  l: []\n")
    # an empty list makes no kernel set at all: nothing can match it
    assert not [n for n in compiled.sets if not n.startswith("fl_")]  # the log gate's only
    assert all(k != "element" for _v, k, _n in _kinds(nft_tx.full(compiled)))


def test_a_delta_creates_new_sets_before_any_rule_refers_to_them() -> None:
    # Kernel 6.18: a named interval set created in the transaction whose rules look into it
    # missed for packets evaluated during the commit (tests/kernel/test_apply_safety.py, the
    # 100 re-applies, found it). New objects come first, in a transaction without rules.
    before = compiled_of("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n")
    after = compiled_of("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443, 8443]}\n"
                        "  - {name: new, to: [203.0.113.0/28], ports: [80]}\n")
    phases = nft_tx.delta_phases(after, nft_tx.Inventory.of(before))
    made = {(kind, body["name"]) for c in phases.prepare for verb, obj in c.items()
            for kind, body in obj.items() if verb == "add" and kind != "table"}
    assert not any(kind == "rule" for kind, _ in made)
    new = {n for n in after.sets if n not in before.sets}
    assert new and {("map" if n.startswith("m_") else "set", n) for n in new} <= made
    assert not any("set" in obj or "map" in obj for c in phases.switch
                   for verb, obj in c.items() if verb == "add")
    undone = {(kind, body["name"]) for c in phases.undo for verb, obj in c.items()
              for kind, body in obj.items() if verb == "delete"}
    assert undone == {(k, n) for k, n in made if k in ("set", "map", "chain", "counter")}


def test_a_cgroup_set_is_refilled_at_every_apply_and_its_chain_is_not() -> None:
    # the kernel binds a cgroup set's element to the cgroup's id when it is added; a restarted
    # unit gets a new cgroup: the set is emptied and filled again in the switch, while the
    # chain that looks into it (by the set's name, which depends on the path) stays as it is
    compiled = compiled_of("version: 1\nallow:\n  - {name: svc, to: [203.0.113.10],"
                           " for: {cgroup: system.slice/web.service}}\n"
                           "  - {name: web, to: [203.0.113.11]}\n")
    (cgroup_set,) = [n for n, s in compiled.sets.items() if s.cgroup is not None]
    assert compiled.sets[cgroup_set].cgroup == "system.slice/web.service"
    assert compiled.sets[cgroup_set].key_type == "cgroupsv2"
    switch = nft_tx.delta_phases(compiled, Inventory.of(compiled)).switch
    assert _kinds(switch) == [("add", "table", "outguard"), ("flush", "set", cgroup_set),
                              ("add", "element", cgroup_set)]
    assert switch[2]["add"]["element"]["elem"] == ["system.slice/web.service"]


def test_a_cgroup_set_is_refilled_by_a_rollback_from_the_stored_form() -> None:
    compiled = compiled_of("version: 1\nallow:\n  - {name: svc, to: [203.0.113.10],"
                           " for: {unit: web.service}}\n")
    (cgroup_set,) = [n for n, s in compiled.sets.items() if s.cgroup is not None]
    marker = {"outguard_cgroups": cgroup_set, "paths": ["system.slice/web.service"]}
    stored = nft_tx.full(compiled, lambda s: marker if s.cgroup is not None
                         else nft_tx.set_elements(s))
    switch = nft_tx.stored_phases(stored, Inventory.of(compiled)).switch
    assert switch[1:3] == [{"flush": {"set": {"family": "inet", "table": "outguard",
                                              "name": cgroup_set}}}, marker]


def _without_digests(inv: Inventory) -> Inventory:
    return Inventory(inv.chains, inv.sets, inv.counters)


def test_a_rollback_delta_from_the_stored_form_is_the_delta_of_the_compiled_policy(
        old: Compiled, new: Compiled) -> None:
    """Rolling NEW back to OLD from OLD's stored commands makes what a delta to OLD makes with
    every chain refilled: the same new objects first, the same rules, the same deletions after."""
    held = _without_digests(Inventory.of(new))
    got = nft_tx.stored_phases(nft_tx.full(old), held)
    target = nft_tx.stored_inventory(nft_tx.full(old))
    want = nft_tx.delta_phases(old, held)
    assert got.prepare == want.prepare
    assert got.cleanup == want.cleanup
    assert got.undo == want.undo
    flushes = [c for c in got.switch if "flush" in c]
    assert sorted(map(str, flushes)) == sorted(str(c) for c in want.switch if "flush" in c)
    assert [c for c in got.switch if "flush" not in c] == [c for c in want.switch if "flush" not in c]
    assert (target.chains, target.sets, target.counters) == \
        (list(old.chains), list(old.sets), old.counters)


def test_a_rollback_does_not_load_a_shared_list_again() -> None:
    """A list both policies use keeps its set: neither its declaration nor its elements (here
    a stored marker, which only apply can expand) are sent."""
    policy = compiled_file(GOLDEN / "lists.yaml")
    list_sets = [n for n in policy.sets if n.startswith("l_")]
    assert list_sets
    stored = nft_tx.full(policy, lambda s: {"outguard_elements": s.name}
                         if s.name.startswith("l_") else nft_tx.set_elements(s))
    phases = nft_tx.stored_phases(stored, Inventory.of(policy))
    assert _kinds(phases.prepare) == [("add", "table", "outguard")]
    assert not any("outguard_elements" in c for c in phases.switch + phases.cleanup)
    # against an empty table the markers go into `prepare`, right after their set
    phases = nft_tx.stored_phases(stored, Inventory())
    for name in list_sets:
        at = next(i for i, c in enumerate(phases.prepare)
                  if c.get("add", {}).get("set", {}).get("name") == name)
        assert phases.prepare[at + 1] == {"outguard_elements": name}


@pytest.mark.parametrize("stored", [
    [{"replace": {"rule": {}}}],
    [{"delete": {"chain": {"family": "inet", "table": "outguard", "name": "output"}}}],
    [{"add": {"element": {"family": "inet", "table": "outguard", "name": "l_x", "elem": [1]}}}],
    [{"add": {"rule": {"family": "inet", "table": "outguard", "chain": "nowhere", "expr": []}}}],
    [{"outguard_elements": "l_x"}],  # a marker before any set
    [{"add": {"counter": {}}}],  # damaged files that are still JSON
    [{"add": {"set": "x"}}],
    ["text"],
])
def test_a_stored_form_that_is_not_a_full_form_is_refused(new: Compiled,
                                                          stored: list[Cmd]) -> None:
    with pytest.raises(ValueError, match="unexpected stored command"):
        nft_tx.stored_phases(stored, Inventory.of(new))
    with pytest.raises(ValueError, match="unexpected stored command"):
        nft_tx.stored_inventory(stored)


def test_a_base_chain_that_is_gone_is_emptied_at_the_switch(old: Compiled,
                                                             new: Compiled) -> None:
    """NEW filters forwarded traffic, OLD does not: going back to OLD (by apply or by rollback)
    empties `forward` in the switch, so it stops filtering even if the cleanup, which deletes
    it, is refused. Other gone chains are left alone until the cleanup."""
    assert "forward" in new.chains and "forward" not in old.chains
    for phases in (nft_tx.delta_phases(old, Inventory.of(new)),
                   nft_tx.stored_phases(nft_tx.full(old), Inventory.of(new))):
        flushed = [c["flush"]["chain"]["name"] for c in phases.switch if "flush" in c]
        assert "forward" in flushed
        gone = set(new.chains) - set(old.chains) - {"forward"}
        assert gone and not gone & set(flushed)
        assert ("delete", "chain", "forward") in _kinds(phases.cleanup)


def test_an_untrusted_record_declares_the_base_chains_again(old: Compiled) -> None:
    """Without recorded digests (the inventory is what the kernel listed) a base chain is
    declared again with its hook — a chain of that name made by hand may have none — but an
    undo never deletes it; with digests (a trusted record) it is not declared."""
    listed = _without_digests(Inventory.of(old))
    for phases in (nft_tx.delta_phases(old, listed),
                   nft_tx.stored_phases(nft_tx.full(old), listed)):
        declared = [c["add"]["chain"] for c in phases.prepare if "chain" in c.get("add", {})]
        assert [c["name"] for c in declared] == ["output"] and declared[0]["hook"] == "output"
        assert ("delete", "chain", "output") not in _kinds(phases.undo)
    trusted = nft_tx.delta_phases(old, Inventory.of(old))
    assert not any("chain" in c.get("add", {}) for c in trusted.prepare)
