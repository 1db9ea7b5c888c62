"""`outguard plan`: what applying a policy would change against what is applied now.

Compares the new policy with the recorded snapshot (never with `nft list`, which is slow with big
sets): rules added, removed and changed; kernel sets created and dropped, with element counts,
and for a changed list the elements added and removed.
"""

from __future__ import annotations

from pathlib import Path

import click

from outguard.cli.common import fail, kernel_options
from outguard.errors import OutguardError, PolicyError


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@kernel_options
def plan(policy: Path, netns: str | None, state_dir_path: Path) -> None:
    """Show what applying POLICY would change."""
    from outguard.compile.lower import lower  # noqa: PLC0415
    from outguard.compile.nft import compile_ruleset  # noqa: PLC0415
    from outguard.policy.load import load_policy, load_text  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        new = load_policy(policy)
        compiled = compile_ruleset(lower(new))
        applied = state.read("applied")
        old_text = state.policy_text("applied")
    except OutguardError as exc:
        fail(exc)
        return
    if applied is None or old_text is None:
        click.echo("nothing is applied yet: everything below is new")
        old_rules: dict[str, str] = {}
        old_sets: set[str] = set()
    else:
        try:
            old = load_text(old_text, applied[0].source, base_dir=Path(applied[0].source).parent,
                            known_lists=lambda _d: True)
            old_rules = {r.name: f"{s}:{r.model_dump_json()}" for s, _i, r in old.rules()}
        except PolicyError:
            old_rules = {}
        old_sets = set(applied[0].inventory.get("sets", []))
    new_rules = {r.name: f"{s}:{r.model_dump_json()}" for s, _i, r in new.rules()}
    lines = []
    for name, text in new_rules.items():
        if name not in old_rules:
            lines.append(f"+ rule {name}")
        elif old_rules[name] != text:
            lines.append(f"~ rule {name}")
    lines += [f"- rule {name}" for name in old_rules if name not in new_rules]
    for name, s in compiled.sets.items():
        if name not in old_sets:
            count = len(s.elements())
            lines.append(f"+ set {name} ({count} elements)")
    for name in sorted(old_sets - set(compiled.sets)):
        stored = f" ({len(state.load_set(name))} elements)" if state.has_set(name) else ""
        lines.append(f"- set {name}{stored}")
    _list_changes(state, compiled, old_sets, lines)
    click.echo("\n".join(lines) if lines else "no changes")


def _list_changes(state: object, compiled: object, old_sets: set[str], lines: list[str]) -> None:
    """For list sets replaced by a new version, the elements added and removed."""
    from outguard.compile.nft import Compiled  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    assert isinstance(state, StateDir) and isinstance(compiled, Compiled)
    by_stem = {n.rsplit("_", 2)[0] + "_" + n.rsplit("_", 1)[1]: n for n in old_sets
               if n.startswith("l_")}
    for name, s in compiled.sets.items():
        if not name.startswith("l_") or name in old_sets:
            continue
        stem = name.rsplit("_", 2)[0] + "_" + name.rsplit("_", 1)[1]
        old_name = by_stem.get(stem)
        if old_name is None or not state.has_set(old_name):
            continue
        before = {repr(e) for e in state.load_set(old_name)}
        after = {repr(e) for e in s.elements()}
        lines.append(f"  list set {stem}: +{len(after - before)} / -{len(before - after)} elements")
