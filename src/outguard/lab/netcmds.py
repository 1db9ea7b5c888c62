"""The commands that wire the lab's two namespaces together (pure argv builders).

Place in the data flow: `topology` (data) -> here (ordered `ip`/`sysctl` argv lists, one
namespace each) -> `network` (runs them with `kernel.netns`). Keeping the commands as plain
data lets tests check exactly what the lab does to the kernel without root.

Why the less obvious commands are there:
- The service addresses 192.0.2.53 and 2001:db8::{10,20,30,53} sit inside the server's on-link
  prefixes, so the server asks for them with ARP / neighbour discovery instead of routing them.
  ARP answers for any local address when `arp_ignore=0` (set explicitly: a new namespace copies
  the host's IPv4 settings). IPv6 only answers for addresses on the receiving interface, so inet
  proxies them (`proxy_ndp`, which the kernel honours only with forwarding on).
- DAD is off (`accept_dad=0`, `nodad`): a tentative address cannot be bound or used for a
  second or two, and there is nobody else on the link to collide with.
"""

from __future__ import annotations

from dataclasses import dataclass

from outguard.lab import topology as t


@dataclass(frozen=True)
class NsCommand:
    """One command to run inside one lab namespace."""

    ns: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"[{self.ns}] {' '.join(self.argv)}"


def sysctl_argv(settings: dict[str, str]) -> tuple[str, ...]:
    """`sysctl -qw k=v ...` (inside a namespace it changes only that namespace's net.*)."""
    return ("sysctl", "-qw", *(f"{k}={v}" for k, v in settings.items()))


def link_up_argv(dev: str) -> tuple[str, ...]:
    return ("ip", "link", "set", "dev", dev, "up")


def veth_argv(dev: str, peer_dev: str, peer_ns: str) -> tuple[str, ...]:
    # Created from inside the first namespace with the peer placed straight into the other: no
    # interface ever appears in the host namespace (where `eth0` is taken anyway).
    return ("ip", "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", peer_ns)


def addr_argv(address: str, prefixlen: int, dev: str) -> tuple[str, ...]:
    if ":" in address:
        return ("ip", "-6", "addr", "add", f"{address}/{prefixlen}", "dev", dev, "nodad")
    return ("ip", "-4", "addr", "add", f"{address}/{prefixlen}", "dev", dev)


def host_addr_argv(address: str, dev: str = "lo") -> tuple[str, ...]:
    """A single service address (/32 or /128) on `dev`."""
    return addr_argv(address, 128 if ":" in address else 32, dev)


def default_route_argv(gateway: str, dev: str) -> tuple[str, ...]:
    family = "-6" if ":" in gateway else "-4"
    return ("ip", family, "route", "add", "default", "via", gateway, "dev", dev)


def proxy_neigh_argv(address: str, dev: str) -> tuple[str, ...]:
    return ("ip", "-6", "neigh", "add", "proxy", address, "dev", dev)


def early_sysctls(ns: str) -> dict[str, str]:
    """Settings needed before the veth exists (new interfaces copy `default`)."""
    settings = {
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
    }
    if ns == t.INET_NS:
        settings |= {
            "net.ipv4.conf.all.arp_ignore": "0",
            "net.ipv4.conf.default.arp_ignore": "0",
            "net.ipv6.conf.all.forwarding": "1",
        }
    return settings


def server_commands() -> list[NsCommand]:
    """Addresses and default routes of the protected server (its eth0 is already up)."""
    dev = t.LINK_DEV
    argvs = [
        link_up_argv("lo"),
        addr_argv(t.SERVER_V4, t.LINK_V4_PREFIXLEN, dev),
        addr_argv(t.SERVER_V6, t.LINK_V6_PREFIXLEN, dev),
        default_route_argv(t.ROUTER_V4, dev),
        default_route_argv(t.ROUTER_V6, dev),
    ]
    return [NsCommand(t.SERVER_NS, a) for a in argvs]


def inet_commands() -> list[NsCommand]:
    """The router side of the link plus every service host's addresses on `lo`."""
    dev = t.LINK_DEV
    argvs = [
        link_up_argv("lo"),
        addr_argv(t.ROUTER_V4, t.LINK_V4_PREFIXLEN, dev),
        addr_argv(t.ROUTER_V6, t.LINK_V6_PREFIXLEN, dev),
    ]
    argvs += [host_addr_argv(a) for h in t.HOSTS for a in h.addresses]
    # proxy_delay: answer proxied solicitations at once, not after a random wait of up to 0.8 s.
    proxy = {f"net.ipv6.conf.{dev}.proxy_ndp": "1", f"net.ipv6.neigh.{dev}.proxy_delay": "0"}
    argvs.append(sysctl_argv(proxy))
    argvs += [
        proxy_neigh_argv(a, dev) for h in t.HOSTS for a in h.addresses if t.on_link_v6(a)
    ]
    return [NsCommand(t.INET_NS, a) for a in argvs]


def build_commands() -> list[NsCommand]:
    """Every command, in order, that turns two empty namespaces into the lab's network."""
    cmds = [NsCommand(ns, sysctl_argv(early_sysctls(ns))) for ns in t.NAMESPACES]
    cmds.append(NsCommand(t.SERVER_NS, veth_argv(t.LINK_DEV, t.LINK_DEV, t.INET_NS)))
    # Both ends up before any address: measured, the first neighbour discovery for a proxied
    # address got lost (one 1 s retransmit) when the links came up after the addresses.
    cmds += [NsCommand(ns, link_up_argv(t.LINK_DEV)) for ns in (t.INET_NS, t.SERVER_NS)]
    return cmds + server_commands() + inet_commands()
