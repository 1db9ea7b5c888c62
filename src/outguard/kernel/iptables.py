"""The iptables kernel boundary: `iptables-restore`, `ip6tables-restore`, `ipset restore` and
the read-only `iptables-save` / `ipset list -n`, in the current or a named network namespace.

Place in the data flow: `export.iptables` renders files (pure), `export.iptables_apply` decides
what to load, this module runs the tools and reports their errors as `KernelError`. The tools
are forked, not linked: iptables has no stable library API (libiptc is internal), and a restore
file is one transaction per table and family, which is exactly the unit we want.

`variant` picks the iptables flavour: "nft" (iptables-nft, nf_tables underneath), "legacy"
(iptables-legacy, x_tables) or "default" (what `iptables` points to on this machine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Literal

from outguard.errors import KernelError
from outguard.kernel import netns as ns

Variant = Literal["default", "nft", "legacy"]
VARIANTS: tuple[Variant, ...] = ("default", "nft", "legacy")
_COUNTER_LINE = re.compile(r'^\[(\d+):(\d+)\] -A (\S+) .*?--comment "?og:([^" ]+)"? ')


def command(base: str, version: int, variant: Variant) -> str:
    """`base` is "iptables", "iptables-restore" or "iptables-save"."""
    name = base if version == 4 else "ip6" + base.removeprefix("ip")
    if variant == "default":
        return name
    head, _, tail = name.partition("-")
    return f"{head}-{variant}" + (f"-{tail}" if tail else "")


def _run(argv: Sequence[str], netns: str | None, *, text: str | None = None,
         check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    if netns is not None:
        return ns.run(netns, argv, input=text, check=check, timeout=timeout)
    if shutil.which(argv[0]) is None:
        raise KernelError(f"`{argv[0]}` is not installed (Debian: iptables, ipset)")
    try:
        proc = subprocess.run(list(argv), input=text, capture_output=True, text=True,
                              check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise KernelError(f"`{' '.join(argv)}` did not finish in {timeout} s") from exc
    if check and proc.returncode != 0:
        raise KernelError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip()}")
    return proc


def restore(version: int, text: str, variant: Variant = "default",
            netns: str | None = None) -> None:
    """Load one restore file with --noflush: only the chains it declares are replaced."""
    _run([command("iptables-restore", version, variant), "--noflush", "--wait"], netns,
         text=text)


def ipset_restore(text: str, netns: str | None = None) -> None:
    _run(["ipset", "-exist", "restore"], netns, text=text)


def ipset_names(netns: str | None = None) -> list[str]:
    return _run(["ipset", "list", "-n"], netns).stdout.split()


def ipset_destroy(name: str, netns: str | None = None) -> None:
    _run(["ipset", "destroy", name], netns)


def save(version: int, variant: Variant = "default", netns: str | None = None,
         counters: bool = False) -> str:
    """`iptables-save -t filter` (with packet counters if asked)."""
    argv = [command("iptables-save", version, variant), "-t", "filter"]
    return _run(argv + (["-c"] if counters else []), netns).stdout


def chains(saved: str, prefix: str) -> list[str]:
    """User chains named `prefix…` in an iptables-save text."""
    return [line[1:].split()[0] for line in saved.splitlines()
            if line.startswith(f":{prefix}")]


def has_rule(saved: str, rule: str) -> bool:
    """Whether `-A CHAIN …` (exactly as iptables-save prints it) is in the saved text."""
    return any(line.split("] ", 1)[-1] == rule for line in saved.splitlines())


def counters(version: int, variant: Variant = "default",
             netns: str | None = None) -> dict[str, int]:
    """Packets per decision key (`allow:x`, `deny:x`, `default`) of outguard's chains, summed
    over the lines that carry the key as `-m comment --comment og:<key>`."""
    out: dict[str, int] = {}
    for line in save(version, variant, netns, counters=True).splitlines():
        m = _COUNTER_LINE.match(line)
        if m and m.group(3).startswith("OUTGUARD-"):
            out[m.group(4)] = out.get(m.group(4), 0) + int(m.group(1))
    return out
