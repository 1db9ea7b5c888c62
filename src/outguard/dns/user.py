"""The resolver's own user: looked up when a policy is lowered, created when it is applied.

`dns.user` (default `outguard-dns`) is the only uid whose packets reach the upstreams (the
kernel rule matches `meta skuid`), and the uid the resolver process drops to after binding its
sockets (`dns.process`). `lower` looks it up (`policy.dnsconf.resolver_ids`: a missing *default*
user is not an error there, `check`/`compile`/`plan` must not create users); `apply`, `outguard
run` and `outguard dns serve` call `ensure`, which creates the default user through
`kernel.privsep` (`useradd --system`) and fills in its ids. Any other user must exist; root is
refused, by name and by uid in `policy.dnsconf`.
"""

from __future__ import annotations

import dataclasses

from outguard.errors import ResolverUserError
from outguard.policy import accounts
from outguard.policy.dnsconf import DEFAULT_USER
from outguard.ruleset.ir import DnsSettings


def ensure(settings: DnsSettings) -> DnsSettings:
    """`settings` with the resolver's ids, creating the default user first if it is missing."""
    if settings.uid is not None and settings.gid is not None:
        return settings
    from outguard.kernel.privsep import create_system_user  # noqa: PLC0415 - runs useradd

    found = accounts.user_ids(settings.user)
    if found is None:
        if settings.user != DEFAULT_USER:
            raise ResolverUserError(f"no user {settings.user!r} on this machine (dns.user)")
        found = create_system_user(settings.user, "outguard DNS resolver")
    return dataclasses.replace(settings, uid=found[0], gid=found[1])
