"""What the agent takes from a policy, built and checked in full before any of it is used.

Place in the data flow: a policy (the applied snapshot, `service.applied`, or the file given to
`outguard run`) → **`prepare`** → `AgentSettings` → `service.live` starts the agent's parts
from it, and switches them to a newer one on a reload. `prepare` reads every file the parts
will need (the policy's list files and feeds' last good copies, DNS blocklists, signature
files) and lowers the `dns:` section, so that a policy whose parts cannot all be built fails
here, while the parts in service are untouched. Blocking: the agent runs it on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from outguard.monitor.classify import Classifier, load_classifier
from outguard.policy.alertconf import AlertSpec
from outguard.policy.loaded import Policy

if TYPE_CHECKING:
    from outguard.feeds.lookup import FeedIndex
    from outguard.ruleset.ir import Ruleset
    from outguard.ruleset.names import NamePolicy
    from outguard.service.options import AgentOptions


@dataclass
class AgentSettings:
    """Everything the agent's parts take from one policy (and the agent's own options)."""

    origin: str  # for people: which policy this is ("policy 3f2a… (applied … from …)")
    key: str | None  # the applied snapshot it came from (None: a file, or no policy)
    policy: Policy | None
    alerts: list[AlertSpec]
    nflog_group: int
    classifier: Classifier
    dns: Ruleset | None = None  # lowered, when the resolver is to run (a `dns:` section)
    names: NamePolicy | None = None  # the resolver's rules, blocklists read
    feeds: bool = False  # the policy names `@feed:` lists: the feed scheduler runs
    index: FeedIndex | None = field(default=None, repr=False)  # which feed holds an address


def prepare(opts: AgentOptions, policy: Policy | None, origin: str,
            key: str | None = None) -> AgentSettings:
    """The settings for `policy` (None: no policy, the monitor alone). Raises what a part would
    raise on building them (PolicyError, BlocklistError, SignatureError, OSError, ...)."""
    alerts = list(opts.alerts) if opts.alerts is not None else (
        list(policy.doc.alerts) if policy is not None else [])
    group = opts.nflog_group
    if group is None:
        group = policy.doc.options.nflog_group if policy is not None else 0
    out = AgentSettings(origin, key, policy, alerts, group, load_classifier(opts.signatures))
    if policy is None:
        return out
    if opts.dns and policy.doc.dns is not None:
        # only with a `dns:` section: without one, lowering resolves the policy's host names
        # here, in a process that may not see the resolv.conf of the namespace it monitors
        from outguard.dns.blocklist import load_blocklists  # noqa: PLC0415
        from outguard.pipeline import lower_policy  # noqa: PLC0415
        from outguard.ruleset.names import NamePolicy  # noqa: PLC0415

        # the resolver's ids, as the apply that made the kernel rule created them
        ruleset = lower_policy(policy, create_dns_user=True)
        if ruleset.dns is not None:
            out.dns = ruleset
            out.names = NamePolicy.of(ruleset, load_blocklists(ruleset.dns.blocklists))
    if opts.feeds:
        from outguard.feeds.lookup import FeedIndex  # noqa: PLC0415
        from outguard.feeds.policy import PREFIX  # noqa: PLC0415

        out.feeds = any(name.startswith(PREFIX) for name in policy.lists)
        if out.feeds:
            out.index = FeedIndex.of_policy(policy)
    return out


def file_policy(path: Path, state_dir: Path) -> Callable[[], Policy]:
    """A loader of the policy file given on the command line (feeds from the state dir)."""
    def load() -> Policy:
        from outguard.pipeline import load_policy  # noqa: PLC0415

        return load_policy(path, feed_dir=state_dir / "feeds")
    return load
