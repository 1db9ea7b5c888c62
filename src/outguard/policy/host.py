"""Warnings that ask this machine: units that do not exist or do not run, cgroups that are not
there, host names that do not resolve now, an NFLOG group another program holds.

`outguard check` runs these after `load` (which is pure but for users and files): the answers
depend on the machine and the moment, so they are warnings, never errors — a unit may be
installed after the policy, a name may resolve once the network is up. Reads the filesystem,
/proc and the system resolver; never the kernel's firewall.
"""

from __future__ import annotations

import configparser
import difflib
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from outguard.errors import Problem
from outguard.policy import accounts
from outguard.policy.loaded import Policy, format_path
from outguard.policy.messages import did_you_mean

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/run/systemd/transient",
             "/run/systemd/generator", "/run/systemd/generator.early",
             "/run/systemd/generator.late", "/usr/local/lib/systemd/system", "/lib/systemd/system",
             "/usr/lib/systemd/system")
# where the cgroup2 hierarchy is mounted: unified layout, or hybrid (systemd's "unified" dir)
CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
RESOLVE_WAIT = 5.0  # seconds for all host names together: a dead resolver must not hang check

Resolver = Callable[[str], list[str]]


def _system_resolver(name: str) -> list[str]:
    try:
        return [str(i[4][0]) for i in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)]
    except (OSError, UnicodeError):
        return []


class Machine:
    """What the checks ask, in one place (tests point it at directories of their own)."""

    def __init__(self, *, unit_dirs: Iterable[str] = UNIT_DIRS,
                 cgroup_roots: Iterable[str] = CGROUP_ROOTS,
                 resolver: Resolver = _system_resolver,
                 nflog_table: str = "/proc/net/netfilter/nfnetlink_log",
                 proc: str = "/proc") -> None:
        self.unit_dirs = [Path(d) for d in unit_dirs]
        self.cgroup_roots = [Path(d) for d in cgroup_roots]
        self.resolver = resolver
        self.nflog_table = Path(nflog_table)
        self.proc = Path(proc)

    def unit_file(self, unit: str) -> Path | None:
        names = [unit]
        if "@" in unit:  # an instance (getty@tty1.service) comes from its template
            prefix, _, rest = unit.partition("@")
            names.append(f"{prefix}@.{rest.rpartition('.')[2]}")
        for directory in self.unit_dirs:
            for name in names:
                if (directory / name).exists():
                    return directory / name
        return None

    def unit_names(self) -> set[str]:
        out: set[str] = set()
        for directory in self.unit_dirs:
            try:
                out |= {p.name for p in directory.iterdir()}
            except OSError:
                continue
        return out

    def cgroup_exists(self, path: str) -> bool:
        return any((root / path.strip("/")).is_dir() for root in self.cgroup_roots)


def _closest_unit(unit: str, known: set[str]) -> str:
    """"Did you mean" among units of the same type, by name without the shared suffix (every
    name ending in ".service" would look alike otherwise)."""
    stem, dot, kind = unit.rpartition(".")
    stems = {k.rpartition(".")[0] for k in known if dot and k.endswith(f".{kind}")}
    if not dot:
        return did_you_mean(unit, known)
    hint = difflib.get_close_matches(stem, sorted(stems), n=1, cutoff=0.6)
    return f"; did you mean {hint[0] + '.' + kind!r}?" if hint else ""


def _unit_user(file: Path) -> str | None:
    """The unit's `User=` (the last one wins, as in systemd), or None."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(file.read_text(errors="replace"))
    except (OSError, configparser.Error):
        return None
    return parser.get("Service", "User", fallback=None) or None


def _same_user(a: str | int, b: str) -> bool:
    def uid(x: str | int) -> int | None:
        try:
            return accounts.uid(int(x) if isinstance(x, str) and x.isdigit() else x)
        except KeyError:
            return None
    return a == b or (uid(a) is not None and uid(a) == uid(b))


def machine_warnings(policy: Policy, machine: Machine | None = None,
                     nflog_owner_ok: Callable[[str], bool] | None = None) -> list[Problem]:
    """Warnings about the policy on this machine now. `nflog_owner_ok(cmdline)` says a process
    holding the NFLOG group is outguard's own (default: its command line names outguard)."""
    machine = machine or Machine()
    out: list[Problem] = []

    def warn(path: tuple[str | int, ...], text: str) -> None:
        out.append(Problem(policy.source, *policy.positions.of(path), format_path(path), text))

    _owners(policy, machine, warn)
    _names(policy, machine, warn)
    _nflog(policy, machine, warn, nflog_owner_ok or (lambda cmd: "outguard" in cmd))
    return out


Warn = Callable[[tuple[str | int, ...], str], None]


def _owners(policy: Policy, machine: Machine, warn: Warn) -> None:
    known: set[str] | None = None
    for section, index, rule in policy.rules():
        owner = rule.owner
        if owner is None:
            continue
        if owner.unit is not None:
            at = (section, index, "for", "unit")
            file = machine.unit_file(owner.unit)
            if file is None:
                known = machine.unit_names() if known is None else known
                warn(at, f"no systemd unit {owner.unit!r} on this machine: the rule matches"
                     f" nothing until it is installed and running{_closest_unit(owner.unit, known)}")
                continue
            if not machine.cgroup_exists(f"system.slice/{owner.unit}"):
                warn(at, f"unit {owner.unit!r} is not running now: the rule matches nothing"
                     " until it runs")
            user = _unit_user(file)
            if owner.user is not None and user is not None and not _same_user(owner.user, user):
                warn((section, index, "for"), f"unit {owner.unit!r} runs as user {user!r}"
                     f" (User= in {file}), not {owner.user!r}: the rule matches nothing")
        if owner.cgroup is not None and not machine.cgroup_exists(owner.cgroup):
            warn((section, index, "for", "cgroup"), f"no cgroup {owner.cgroup!r} on this machine"
                 " now: the rule matches nothing until it exists")


def _names(policy: Policy, machine: Machine, warn: Warn) -> None:
    """Host names resolved at apply time (no `dns:` section) that do not resolve now."""
    if policy.doc.dns is not None:
        return
    where: dict[str, tuple[str | int, ...]] = {}
    for section, index, rule in policy.rules():
        for j, t in enumerate(rule.to or []):
            if t.kind == "host":
                where.setdefault(t.value, (section, index, "to", j))
    for name, loaded in policy.lists.items():
        if loaded.file is None and not name.startswith("feed:"):
            for j, t in enumerate(loaded.targets):
                if t.kind == "host":
                    where.setdefault(t.value, ("lists", name, j))
    if not where:
        return
    pool = ThreadPoolExecutor(max_workers=min(16, len(where)))
    futures = {name: pool.submit(machine.resolver, name) for name in where}
    done, _ = wait(futures.values(), timeout=RESOLVE_WAIT)
    pool.shutdown(wait=False, cancel_futures=True)  # a hung lookup is left behind, not waited for
    for name, future in futures.items():
        if future not in done:
            warn(where[name], f"host name {name!r} did not resolve within {RESOLVE_WAIT:.0f} s:"
                 f" {_GOES_ON}")
        elif not future.result():
            warn(where[name], f"host name {name!r} does not resolve on this machine now:"
                 f" {_GOES_ON}")


_GOES_ON = "apply goes on without it (the name matches nothing until an apply resolves it)"


def _nflog(policy: Policy, machine: Machine, warn: Warn, owner_ok: Callable[[str], bool]) -> None:
    """Another program (ulogd, a second outguard's monitor...) bound to our NFLOG group."""
    group = policy.doc.options.nflog_group
    try:
        lines = machine.nflog_table.read_text().splitlines()
    except OSError:
        return  # not root, or no nfnetlink_log loaded: nobody holds any group
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) != group:
            continue
        portid = fields[1]
        try:
            cmdline = (machine.proc / portid / "cmdline").read_bytes().replace(b"\0", b" ")
            shown = cmdline.decode(errors="replace").strip()
        except OSError:
            shown = ""
        if shown and owner_ok(shown):
            continue
        who = f"{shown[:60]!r} (pid {portid})" if shown else f"netlink port {portid}"
        at: tuple[str | int, ...] = ("options", "nflog_group") \
            if ("options", "nflog_group") in policy.positions.values else ()
        warn(at, f"NFLOG group {group} is held by {who}: outguard's monitor would receive"
             " nothing; pick another options.nflog_group")

