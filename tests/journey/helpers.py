"""Shared steps of the journey tests: suggest → YAML → the real loader → decide."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from outguard.events import LearnedFlow
from outguard.journey.render import render
from outguard.journey.simulate import LearnedNames, Summary, simulate
from outguard.journey.suggest import Suggestion, suggest
from outguard.pipeline import load_policy, lower_policy
from outguard.policy.loaded import Policy


def suggested(flows: Sequence[LearnedFlow], tmp: Path, **kw: object) -> tuple[Suggestion, str, Policy]:
    """The suggestion, its text, and the policy `outguard check` would load from it (a
    PolicyError here is a policy check refuses)."""
    s = suggest(flows, **kw)  # type: ignore[arg-type]
    text = render(s)
    path = tmp / "suggested.yaml"
    path.write_text(text)
    return s, text, load_policy(path, feed_dir=tmp / "feeds")


def replay(policy: Policy, flows: Sequence[LearnedFlow]) -> Summary:
    names = LearnedNames(flows)
    ruleset = lower_policy(policy, resolver=names.resolver)
    return simulate(ruleset, flows, names=names)
