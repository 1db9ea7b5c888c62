"""The resolver's own user: looked up when a policy is lowered, created when it is applied.

`dns.user` (default `outguard-dns`) is the only uid whose packets reach the upstreams (the
kernel rule matches `meta skuid`), and the uid the resolver process drops to after binding its
sockets (`dns.process`). `lower` calls `ids` (pure lookup: a missing *default* user is not an
error there, `check`/`compile`/`plan` must not create users); `apply`, `outguard run` and
`outguard dns serve` call `ensure`, which creates the default user through `kernel.privsep`
(`useradd --system`) and fills in its ids. Any other user must exist; root is refused, by name
in `policy.dnsconf` and by uid here.
"""

from __future__ import annotations

import dataclasses
import pwd

from outguard.errors import OutguardError
from outguard.policy.dnsconf import DEFAULT_USER, DnsConfig, DnsSettings


class ResolverUserError(OutguardError):
    """The resolver's user does not exist, or may not be used."""


def lookup(user: str | int) -> tuple[int, int] | None:
    """(uid, gid) of a user name or uid; None when no such user exists. A uid with no passwd
    entry is used as it is, with the gid of the same number."""
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        return (user, user) if isinstance(user, int) else None
    return entry.pw_uid, entry.pw_gid


def ids(config: DnsConfig) -> tuple[int | None, int | None]:
    """The uid/gid `lower` records: (None, None) while the default user is not created yet.
    KeyError for another missing user, ValueError for one that is root under another name."""
    found = lookup(config.user)
    if found is None:
        if config.user == DEFAULT_USER:
            return None, None
        raise KeyError(config.user)
    if found[0] == 0:
        raise ValueError(f"user {config.user!r} is uid 0: the resolver must not run as root")
    return found


def ensure(settings: DnsSettings) -> DnsSettings:
    """`settings` with the resolver's ids, creating the default user first if it is missing."""
    if settings.uid is not None and settings.gid is not None:
        return settings
    from outguard.kernel.privsep import create_system_user  # noqa: PLC0415 - runs useradd

    found = lookup(settings.user)
    if found is None:
        if settings.user != DEFAULT_USER:
            raise ResolverUserError(f"no user {settings.user!r} on this machine (dns.user)")
        found = create_system_user(settings.user, "outguard DNS resolver")
    return dataclasses.replace(settings, uid=found[0], gid=found[1])
