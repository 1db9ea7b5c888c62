"""`outguard doctor`: is this host ready for outguard, and is outguard running as it should?

Place in the data flow: beside the agent (`service`), reading the host through
`kernel.hostprobe` and the state directory; the CLI prints the lines. Each check is one line:
`ok`, `warn` (works, but not as intended) or `fail` (something outguard needs is missing or
broken) with what to do. The verdicts are pure functions of the facts, so each is tested with
tables; `run_checks` gathers the facts.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from outguard.errors import OutguardError
from outguard.kernel import cgroups, hostprobe
from outguard.state import StateDir

MIN_NFT = (1, 0, 6)  # the version outguard's transactions were measured on (DESIGN.md)
AGENT_UNIT, RESTORE_UNIT = "outguard.service", "outguard-restore.service"


@dataclass(frozen=True)
class Check:
    """One line of the report."""
    level: str  # ok | warn | fail
    name: str
    message: str
    hint: str = ""

    def line(self) -> str:
        tail = f" -> {self.hint}" if self.hint else ""
        return f"{self.level:<4}  {self.name}: {self.message}{tail}"


def nftables(version: str | None, lib_problem: str | None) -> Check:
    if lib_problem is not None:
        return Check("fail", "nftables", lib_problem, "apt-get install libnftables1")
    if version is None:
        return Check("warn", "nftables", "libnftables loads, but there is no `nft` command",
                     "apt-get install nftables (outguard needs the library; `nft` is for you)")
    parts = tuple(int(p) for p in version.split("."))
    if parts < MIN_NFT:
        return Check("warn", "nftables", f"nft v{version}, older than the tested "
                     f"{'.'.join(map(str, MIN_NFT))}", "use Debian 12's nftables or newer")
    return Check("ok", "nftables", f"nft v{version}, libnftables.so.1 loads")


def nflog(state: str) -> Check:
    says = {"loaded": "nfnetlink_log is loaded", "builtin": "nfnetlink_log is built in",
            "module": "nfnetlink_log is a module; the kernel loads it with the first rule that"
                      " logs"}
    if state in says:
        return Check("ok", "NFLOG", says[state])
    return Check("fail", "NFLOG", "this kernel has no nfnetlink_log: the monitor sees no blocked"
                 " packet", "a kernel with CONFIG_NETFILTER_NETLINK_LOG (Debian's has it)")


def cgroup2(mount: str | None) -> Check:
    if mount is None:
        return Check("warn", "cgroup v2", "no cgroup2 hierarchy is mounted: `for: {unit: …}` /"
                     " `cgroup` rules match nothing and incidents name no unit",
                     "boot with systemd.unified_cgroup_hierarchy=1, or mount cgroup2")
    if mount == cgroups.SYSFS_CGROUP:
        return Check("ok", "cgroup v2", f"mounted at {mount}")
    if mount.startswith("/proc/self/fd/"):
        return Check("ok", "cgroup v2", "the host's hierarchy, passed into the namespace")
    return Check("ok", "cgroup v2", f"mounted at {mount} (a hybrid layout: outguard finds it"
                 " there)")


def state_dir(path: Path, mode: int | None, uid: int | None) -> Check:
    """`mode`/`uid` of the directory, None when it does not exist."""
    if mode is None or uid is None:
        return Check("warn", "state dir", f"{path} does not exist: nothing was applied here",
                     "outguard apply POLICY (it creates it, 0700)")
    perms = stat.S_IMODE(mode)
    if uid != 0:
        return Check("fail", "state dir", f"{path} is owned by uid {uid}, not root: whoever"
                     " owns it can change what is restored at boot", f"chown root: {path}")
    if perms & 0o022:
        return Check("fail", "state dir", f"{path} is {perms:04o}: others can write what is"
                     " restored at boot", f"chmod 700 {path}")
    if perms & 0o077:
        return Check("warn", "state dir", f"{path} is {perms:04o}: others can read the events"
                     " (command lines, destinations)", f"chmod 700 {path}")
    return Check("ok", "state dir", f"{path} is {perms:04o}, root's")


def port(what: str, listen: str | None, found: list[hostprobe.Listener],
         agent_running: bool | None) -> Check:
    """The port `listen` ("addr:port") of outguard's resolver or proxy, and who holds it."""
    name = f"{what} port"
    if listen is None:
        return Check("ok", name, f"the applied policy has no {what}")
    others = [f for f in found if not _is_outguard(f.cmdline)]
    ours = [f for f in found if _is_outguard(f.cmdline)]
    if others:
        who = ", ".join(f"{' '.join(f.cmdline[:2]) or '?'} (pid {f.pid}, {f.proto} {f.addr})"
                        if f.pid is not None else f"{f.proto} {f.addr} (process not found)"
                        for f in others)
        return Check("fail", name, f"{listen} is also held by {who}: outguard cannot listen there",
                     "stop that service, or move the policy's listen address")
    if ours:
        return Check("ok", name, f"{listen} is served by outguard (pid {ours[0].pid})")
    hint = ("systemctl start outguard" if agent_running is not None
            else "start the agent: outguard run --no-apply")
    return Check("warn", name, f"{listen} is free: the agent is not running", hint)


def _is_outguard(cmdline: tuple[str, ...]) -> bool:
    return any("outguard" in part for part in cmdline[:4])


def unit(active: str, enabled: str, restore_enabled: str) -> list[Check]:
    out = []
    if active == "active":
        out.append(Check("ok", "unit", f"{AGENT_UNIT} is active ({enabled})"))
    elif active == "failed":
        out.append(Check("fail", "unit", f"{AGENT_UNIT} failed",
                         f"journalctl -u {AGENT_UNIT}; systemctl restart {AGENT_UNIT}"))
    else:
        out.append(Check("warn", "unit", f"{AGENT_UNIT} is {active} ({enabled})",
                         f"systemctl enable --now {AGENT_UNIT}"))
    if restore_enabled != "enabled":
        out.append(Check("warn", "unit", f"{RESTORE_UNIT} is {restore_enabled}: the policy is"
                         " not put back at boot", f"systemctl enable {RESTORE_UNIT}"))
    else:
        out.append(Check("ok", "unit", f"{RESTORE_UNIT} is enabled (restores at boot)"))
    return out


def _listen_port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


PROXY_DEFAULT_LISTEN = ("127.0.0.1:3128", "[::1]:3128")


def proxy_listens(policy_text: str | None) -> list[str]:
    """The addresses of the applied policy's `proxy:` section (`listen:`, one or a list; its
    default without one), read from the policy's YAML alone: [] without a proxy, or when the
    text is not a mapping (the apply that wrote it loaded it; this only looks)."""
    try:
        doc = yaml.safe_load(policy_text) if policy_text else None
    except yaml.YAMLError:
        return []
    section = doc.get("proxy") if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        return []
    listen = section.get("listen", list(PROXY_DEFAULT_LISTEN))
    items = [listen] if isinstance(listen, str) else listen if isinstance(listen, list) else []
    return [str(x) for x in items if isinstance(x, str) and ":" in x]


def run_checks(state_path: Path, *, systemd: Callable[[], bool] = hostprobe.systemd_running,
               ) -> list[Check]:
    """Every check, in the order the report prints them."""
    checks = [nftables(hostprobe.nft_version(), hostprobe.libnftables_loads()),
              nflog(hostprobe.nflog_state()), cgroup2(cgroups.CgroupLookup().root)]
    try:
        st = state_path.stat()
        checks.append(state_dir(state_path, st.st_mode, st.st_uid))
    except OSError:
        checks.append(state_dir(state_path, None, None))
    try:
        snap = StateDir(state_path).snapshot() if state_path.is_dir() else None
    except OutguardError as exc:
        snap = None
        checks.append(Check("fail", "state dir", f"the applied snapshot cannot be read: {exc}",
                            "outguard apply POLICY (or outguard restore from a backup)"))
    on_systemd = systemd()
    active = hostprobe.unit_state(AGENT_UNIT) if on_systemd else None
    dns_listen = snap.dns_listen if snap is not None else None
    found = hostprobe.listeners(_listen_port(dns_listen)) if dns_listen else []
    running = None if active is None else active[0] == "active"
    checks.append(port("resolver", dns_listen, found, running))
    text = StateDir(state_path).policy_text() if snap is not None else None
    by_port: dict[int, list[str]] = {}
    for listen in proxy_listens(text):
        by_port.setdefault(_listen_port(listen), []).append(listen)
    for number, listens in sorted(by_port.items()):
        checks.append(port("proxy", ", ".join(listens),
                           hostprobe.listeners(number, ("tcp",)), running))
    if active is None:
        checks.append(Check("warn", "unit", "systemd is not running here: units not checked",
                            "run the agent yourself: outguard run --no-apply"))
    else:
        checks.extend(unit(active[0], active[1], hostprobe.unit_state(RESTORE_UNIT)[1]))
    return checks
