"""Users and groups of this machine: the one place outguard asks the user database.

Place in the data flow: a policy names users and groups (`for: {user, group}`, `dns.user`);
`checks` asks whether they exist (with "did you mean"), `ruleset.lower` turns them into the ids
the kernel matches, `outguard explain` takes them on its command line, `dns.user` creates the
resolver's own user, and the monitor names the user of a blocked socket. A name is looked up
through NSS (`pwd`, `grp`); a number is an id as it is.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterator


def uid(user: str | int) -> int:
    """The uid of a user name, or the uid given. KeyError when no user has that name."""
    return user if isinstance(user, int) else pwd.getpwnam(user).pw_uid


def gid(group: str | int) -> int:
    """The gid of a group name, or the gid given. KeyError when no group has that name."""
    return group if isinstance(group, int) else grp.getgrnam(group).gr_gid


def user_ids(user: str | int) -> tuple[int, int] | None:
    """(uid, gid) of a user name or uid; None when no user has that name. A uid with no passwd
    entry is used as it is, with the gid of the same number."""
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        return (user, user) if isinstance(user, int) else None
    return entry.pw_uid, entry.pw_gid


def has_user(user: str | int) -> bool:
    """Does the passwd database hold this user name or uid?"""
    try:
        pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        return False
    return True


def user_name(uid: int) -> str | None:
    """The name of a uid, None when it has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def user_names() -> Iterator[str]:
    """Every user name (for "did you mean")."""
    return (p.pw_name for p in pwd.getpwall())


def group_names() -> Iterator[str]:
    """Every group name (for "did you mean")."""
    return (g.gr_name for g in grp.getgrall())
