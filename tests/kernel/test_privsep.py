"""`kernel.privsep`: the system user, and a drop of root that cannot be undone.

Creates one user with a unique name (`ogdns-<hex>`) and removes it again; the drop runs in a
child process (it is for good)."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys

import pytest

from outguard.errors import KernelError
from outguard.kernel import privsep

pytestmark = pytest.mark.kernel


def test_create_system_user_is_idempotent() -> None:
    name = f"ogdns-{secrets.token_hex(3)}"
    try:
        uid, gid = privsep.create_system_user(name, "outguard test user")
        entry = pwd.getpwnam(name)
        assert (entry.pw_uid, entry.pw_gid) == (uid, gid) and 0 < uid < 1000
        assert entry.pw_shell.endswith("nologin") and not os.path.exists(entry.pw_dir)
        assert privsep.create_system_user(name, "outguard test user") == (uid, gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


_DROP = """
import os, sys
from outguard.kernel import privsep
privsep.drop_privileges(65534, 65534)
try:
    os.setresuid(0, 0, 0)
    print("regained")
except PermissionError:
    print(os.getresuid(), os.getresgid(), os.getgroups(), privsep.effective_capabilities())
"""


def test_drop_privileges_is_for_good() -> None:
    got = subprocess.run([sys.executable, "-c", _DROP], capture_output=True, text=True,
                         timeout=30, check=True)
    assert got.stdout.strip() == "(65534, 65534, 65534) (65534, 65534, 65534) [] 0"
    with pytest.raises(KernelError, match="root"):
        privsep.drop_privileges(0, 0)
