"""What the host itself must reach for an enforcing policy to keep working, and whether the
policy lets it: its own name servers (without a `dns:` section), and the hosts its `url:` and
registry feeds download from. `outguard check` warns about each one the policy blocks, naming
it and the allow rule to add; nothing is allowed behind the user's back.

- Without `dns:`, every program (and the next `apply`, which resolves the policy's host names)
  asks the name servers of resolv.conf on port 53, UDP and TCP: if no allow rule lets them out,
  every lookup fails and the rules by host name match nothing after the next apply.
- A feed is downloaded by `outguard feeds update` or the agent, as root: with `dns:` its host
  must be a name an allow rule names (outguard's resolver answers nothing else), without it an
  allow rule must let out one of the addresses the host resolves to (or name the host).

Place in the data flow: after `decide` — the question "is this flow allowed?" is asked of the
one decision function, on the ruleset `lower` makes of the loaded policy; the machine's answers
(resolv.conf, the system resolver) come in through `HostView`. Called by `cli.check`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from outguard.errors import Problem
from outguard.policy.loaded import Policy, format_path
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.lower import lower

RESOLVE_WAIT = 5.0  # seconds for all feed hosts together


def _system_resolver(name: str) -> list[str]:
    try:
        return sorted({str(i[4][0]) for i in socket.getaddrinfo(name, None,
                                                                 proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError):
        return []


@dataclass
class HostView:
    """What the machine says. `shown`: how to name resolv.conf in messages (under `--netns`,
    `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf)."""

    resolv_conf: Path = Path("/etc/resolv.conf")
    # systemd-resolved's upstreams, when resolv.conf names only its stub (127.0.0.53)
    resolved_conf: Path = Path("/run/systemd/resolve/resolv.conf")
    shown: str = "/etc/resolv.conf"
    resolve: Callable[[str], list[str]] = field(default=_system_resolver)

    @classmethod
    def of_netns(cls, netns: str | None, etc: Path = Path("/etc/netns")) -> HostView:
        # `ip netns exec` bind-mounts the namespace's own file only when there is one; without
        # it the namespace reads the host's, and the message must name the file really read
        if netns and (etc / netns / "resolv.conf").exists():
            return cls(shown=str(etc / netns / "resolv.conf"))
        return cls()


def _servers(path: Path) -> tuple[list[str], bool] | None:
    """(name servers off the loopback, whether a loopback one is listed); None: no file."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    out, loopback = [], False
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].partition("%")[0])
            except ValueError:
                continue
            if addr.is_loopback:
                loopback = True
            elif str(addr) not in out:
                out.append(str(addr))
    return out, loopback


def name_servers(view: HostView) -> tuple[list[str], str]:
    """The host's name servers off the loopback, and the file that names them."""
    got = _servers(view.resolv_conf)
    if got is None:
        return [], view.shown
    servers, loopback = got
    if not servers and loopback:  # a local stub: what it forwards to is what leaves the host
        stub = _servers(view.resolved_conf)
        if stub is not None and stub[0]:
            return stub[0], str(view.resolved_conf)
    return servers, view.shown


def _allowed(ruleset: Ruleset, flow: Flow) -> bool:
    return decide(ruleset, flow).rule.startswith("allow:")


def _dns_warning(policy: Policy, ruleset: Ruleset, view: HostView) -> list[str]:
    servers, where = name_servers(view)
    blocked = [s for s in servers
               if not all(_allowed(ruleset, Flow(dst=s, port=53, proto=proto))
                          for proto in ("udp", "tcp"))]
    if not blocked:
        return []
    them = ", ".join(blocked)
    to = ", ".join(f'"{s}"' if ":" in s else s for s in blocked)
    return [f"enforce without a `dns:` section, and no allow rule lets this host's name"
            f" server{'s' if len(blocked) > 1 else ''} {them} ({where}) be reached on port 53"
            " (udp and tcp) by every user: every name lookup on this host fails, and the next"
            " apply cannot resolve the policy's host names (their rules then match nothing)."
            f" Add `- {{name: dns, to: [{to}], ports: [53]}}` to `allow:` (or a `dns:` section"
            " and `outguard dns install`)"]


def _endpoint(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _feed_warnings(policy: Policy, ruleset: Ruleset, view: HostView,
                   ) -> list[tuple[str, tuple[str | int, ...]]]:
    """(message, where) for each feed whose download the policy blocks."""
    uses: dict[str, tuple[str | int, ...]] = {}
    for section, index, rule in policy.rules():
        for j, t in enumerate(rule.to or []):
            if t.kind == "list" and t.value.startswith("feed:") and t.value in policy.lists:
                uses.setdefault(t.value, (section, index, "to", j))
    hosts: dict[str, tuple[str, int, tuple[str | int, ...]]] = {}
    for key, at in uses.items():
        spec = getattr(policy.lists[key], "spec", None)
        endpoint = _endpoint(spec.url) if spec is not None and spec.url else None
        if endpoint is not None:
            name = key[len("feed:"):]
            where = ("feeds", name) if name in policy.doc.feeds else at
            hosts[name] = (*endpoint, where)
    dns = ruleset.dns is not None
    # feeds update and the agent download as root
    by_name = {name: _allowed(ruleset, Flow(name=host, port=port, proto="tcp", uid=0, gid=0))
               for name, (host, port, _w) in hosts.items()}
    addresses = {} if dns else _resolve({h for n, (h, _p, _w) in hosts.items()
                                         if not by_name[n]}, view)
    out = []
    for name, (host, port, where) in hosts.items():
        if by_name[name] or any(_allowed(ruleset, Flow(dst=a, port=port, proto="tcp", uid=0,
                                                       gid=0)) for a in addresses.get(host, [])):
            continue
        how = ("outguard's resolver refuses the name" if dns
               else "no allow rule lets out its addresses" if addresses.get(host)
               else f"{host} does not resolve now and no allow rule names it")
        out.append((f"feed {name} is downloaded from {host} (port {port}/tcp), which this"
                    f" policy blocks ({how}): `outguard feeds update` and the agent cannot"
                    f" fetch it, and its last good copy grows old. Add `- {{name: feed-{name},"
                    f" to: [{host}], ports: [{port}], proto: tcp}}` to `allow:`", where))
    return out


def _proxy_warning(ruleset: Ruleset) -> list[str]:
    """The proxy connects as its own user: without `only_egress` (whose kernel rule lets that
    user out on 80 and 443) an allow rule must, or every request through it ends in a 502
    after the connect timeout (a newcomer's trial: nothing said why)."""
    proxy = ruleset.proxy
    if proxy is None or 80 in proxy.own_ports or 443 in proxy.own_ports:
        return []
    for rule in ruleset.allow:
        m = rule.match
        if m.proto in ("any", "tcp") and (m.uid is None or m.uid == proxy.uid) and \
                m.gid is None and m.cgroup is None and \
                (not m.ports or any(lo <= p <= hi for lo, hi in m.ports for p in (80, 443))):
            return []
    return [f"the proxy connects as user {proxy.user}, and no allow rule lets that user out on"
            " TCP 80 or 443: every request through it fails (502 after the connect timeout)."
            " Set `proxy.only_egress: true` (the kernel then lets the proxy, and only the"
            " proxy, out on 80 and 443) or add a rule such as `- {name: proxy-out, to: [...],"
            f" ports: [80, 443], proto: tcp, for: {{user: {proxy.user}}}}}`"]


def _resolve(names: set[str], view: HostView) -> dict[str, list[str]]:
    if not names:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(8, len(names)))
    futures = {name: pool.submit(view.resolve, name) for name in names}
    done, _ = wait(futures.values(), timeout=RESOLVE_WAIT)
    pool.shutdown(wait=False, cancel_futures=True)  # a hung lookup is left behind
    return {name: f.result() for name, f in futures.items() if f in done}


def reach_warnings(policy: Policy, view: HostView | None = None) -> list[Problem]:
    """Warnings for an enforcing policy that blocks what the host itself needs (see the module
    docstring); none in audit mode (nothing is blocked)."""
    if policy.doc.mode != "enforce":
        return []
    view = view or HostView()
    # names in rules are not resolved here: the name servers and feed hosts are asked about
    # by address and by name
    ruleset = lower(policy, resolver=lambda _name: [], warnings=[])
    out: list[Problem] = []

    def warn(path: tuple[str | int, ...], text: str) -> None:
        out.append(Problem(policy.source, *policy.positions.of(path), format_path(path), text))

    if ruleset.dns is None:
        for text in _dns_warning(policy, ruleset, view):
            warn(("mode",) if ("mode",) in policy.positions.values else (), text)
    for text, where in _feed_warnings(policy, ruleset, view):
        warn(where, text)
    for text in _proxy_warning(ruleset):
        warn(("proxy",), text)
    return out
