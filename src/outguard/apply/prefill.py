"""What an FQDN set starts with when apply makes it: the resolver's saved answers.

With `dns:`, a rule that gains or loses a name gets a new kernel set (its name follows the
rule's names), otherwise empty: clients that keep an answer (a JVM, nginx resolving at start)
would be cut off until they ask again. So the planner fills each new set from the cache file
the agent saves (every 30 s and when it stops) for the names the NEW policy puts into that set,
each address with what its old entry had left. A delta leaves the sets the kernel holds as they
are, elements and all; when the kernel refuses it and the whole table is replaced instead, the
executor asks here again for those sets too (they are made anew: they must not come back
empty). Read here, never written. Pure apart from reading that file (and the policy's DNS
blocklists, which decide what the resolver answers).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from outguard.nftables.model import Compiled
from outguard.ruleset.ir import Ruleset
from outguard.state import StateDir


def dns_prefill(ruleset: Ruleset, compiled: Compiled, held: Collection[str], state: StateDir,
                now: float | None = None) -> dict[str, list[tuple[str, int]]]:
    """FQDN set name → [(address, seconds left)], for the sets not in `held` (the kernel's, or
    those given theirs already)."""
    dns = ruleset.dns
    new = [n for n, s in compiled.sets.items() if s.timeout and n not in held]
    if dns is None or not new:
        return {}
    from outguard.dns import cache as dcache  # noqa: PLC0415 - only policies with `dns:`
    from outguard.dns.blocklist import BlocklistError, load_blocklists  # noqa: PLC0415
    from outguard.ruleset.names import NamePolicy  # noqa: PLC0415

    data = dcache.read(state.path / dcache.FILE)
    if data is None:
        return {}
    try:
        blocked = load_blocklists(dns.blocklists)
    except BlocklistError:
        return {}  # a name it may list is not put back (the resolver will not start either)
    out: dict[str, list[tuple[str, int]]] = {}
    for name, addr, left in dcache.prefill(data, NamePolicy.of(ruleset, blocked), dns, new,
                                           time.time() if now is None else now):
        out.setdefault(name, []).append((addr, left))
    return out
