"""`outguard proxy serve`: bind the listeners as root, become the proxy's user, serve.

Place in the data flow: the composition of the proxy for one foreground process: the policy's
ruleset (lowered once by the caller), the `proxy:` section, a resolver (outguard's when the
policy has `dns:`, else the system's), `who.SocketIdentity` on a sock_diag socket opened
before the drop, and `server.Proxy` on the listening sockets.

The user (default outguard-proxy, created if missing through `kernel.privsep`) is taken after
binding, as the resolver does: the proxy parses whatever a local process sends, so it keeps no
root. Run by a non-root user, it serves as that user (a test, a developer's shell).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from outguard.errors import OutguardError
from outguard.kernel import privsep
from outguard.kernel.sockdiag import SockDiag
from outguard.monitor.attribute import Attributor
from outguard.monitor.metrics import Families, Metrics, MetricsServer
from outguard.policy import accounts
from outguard.policy.proxyconf import DEFAULT_USER, ProxyConfig, listen_endpoints
from outguard.proxy import control
from outguard.proxy.resolve import Cached, Resolve, outguard_resolver, system_timed
from outguard.proxy.server import Proxy, Record
from outguard.proxy.transparent import Transparent
from outguard.proxy.who import SocketIdentity
from outguard.ruleset.ir import Ruleset


class ProxyStartError(OutguardError):
    """The proxy could not start (bind, user); nothing is served."""


@dataclass(frozen=True)
class ProxyUser:
    name: str | int
    uid: int
    gid: int


def proxy_user(config: ProxyConfig) -> ProxyUser:
    """The proxy's user, created when it is the missing default."""
    found = accounts.user_ids(config.user)
    if found is None:
        if config.user != DEFAULT_USER:
            raise ProxyStartError(f"no user {config.user!r} on this machine (proxy.user)")
        found = privsep.create_system_user(DEFAULT_USER, "outguard egress proxy")
    if found[0] == 0:
        raise ProxyStartError(f"proxy.user {config.user!r} is uid 0: the proxy never runs as root")
    return ProxyUser(config.user, *found)


def transparent_endpoints(config: ProxyConfig) -> list[tuple[str, int]]:
    """Where redirected connections arrive: the kernel's redirect of a local process's
    connection goes to 127.0.0.1 or ::1, at `transparent_port`."""
    if not config.transparent:
        return []
    return [("127.0.0.1", config.transparent_port), ("::1", config.transparent_port)]


def bind(config: ProxyConfig, endpoints: list[tuple[str, int]] | None = None
         ) -> list[socket.socket]:
    """Listening sockets for every `listen` entry, or for `endpoints` (all or none)."""
    out: list[socket.socket] = []
    try:
        for addr, port in listen_endpoints(config) if endpoints is None else endpoints:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are
            # TCP, and an accepted socket inherits proto 0 otherwise (Nagle then holds a
            # response's second write for the client's delayed ACK: 40 ms per kept-alive
            # request)
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise ProxyStartError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from exc
    return out


def resolver_for(ruleset: Ruleset) -> Resolve:
    """outguard's resolver when the policy has `dns:`, else the system's; answers kept for
    their TTL (`resolve.Cached`)."""
    if ruleset.dns is not None:
        return Cached(outguard_resolver(*ruleset.dns.listen))
    return Cached(system_timed)


class Lines:
    """One JSON line per decided request, on stdout: the lines of one turn of the event loop
    go out in one write, at the end of that turn (a write and a flush per request cost more
    than the request's decision; no line waits for anything but the loop's current turn)."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def __call__(self, record: Record) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(record_line(record))

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


def record_line(record: Record) -> str:
    """A decided request as its JSON line."""
    c, v = record.client, record.verdict
    return json.dumps({
        "decision": "allowed" if v.allowed else "refused", "method": record.method,
        "host": record.host, "port": record.port, "status": record.status, "rule": v.rule,
        "reason": v.reason, "audit": v.audit, "uid": c.who.uid, "user": c.user, "pid": c.pid,
        "exe": c.exe, "unit": c.unit, "client": c.ends[0] if c.ends else None,
        "ends": list(c.ends) if c.ends else None})


def proxy_families(proxy: Proxy) -> Families:
    """The proxy's figures at scrape time (the endpoint's thread reads the loop's counters:
    a dict copy is atomic under the GIL)."""
    def families() -> Iterator[Metric]:
        requests = CounterMetricFamily("outguard_proxy_requests", "Proxy requests decided, by"
                                       " decision and rule", labels=["decision", "rule"])
        for (decision, rule), count in dict(proxy.counts).items():
            requests.add_metric([decision, rule], count)
        yield requests
        yield GaugeMetricFamily("outguard_proxy_connections", "Client connections open now",
                                value=proxy.active)
    return families


def _quiet_cancel(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The loop's exception handler: at shutdown every open connection's task is cancelled,
    and Python 3.11's stream callback reports each as an error (thousands of tracebacks)."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def _on_hup(loop: asyncio.AbstractEventLoop, reload: Callable[[], Ruleset],
            current: list[Ruleset]) -> None:
    """SIGHUP: the policy again, lowered on a worker thread (it may resolve names); new
    requests get it, open connections and tunnels go on. A policy that fails to load changes
    nothing (said on stderr)."""
    def done(future: asyncio.Future[Ruleset]) -> None:
        try:
            current[0] = future.result()
        except (OutguardError, OSError) as exc:
            print(f"outguard proxy: reload failed, the previous policy stays: {exc}",
                  file=sys.stderr, flush=True)
        else:
            print("outguard proxy: policy reloaded", file=sys.stderr, flush=True)

    loop.run_in_executor(None, reload).add_done_callback(done)


def _as_child(loop: asyncio.AbstractEventLoop, reload_text: Callable[[str], Ruleset],
              current: list[Ruleset], proxy: Proxy, stop: asyncio.Event) -> None:
    """`outguard run`'s child: policies on stdin (its end stops the proxy), counts on stdout."""
    control.StdinPolicies(loop, lambda text: _on_hup(loop, lambda: reload_text(text), current),
                          stop.set)
    control.every(loop, lambda: proxy.active)


def _bind_all(config: ProxyConfig) -> tuple[list[socket.socket], list[socket.socket]]:
    """(every listening socket, the transparent ones among them): all or none."""
    sockets = bind(config)
    try:
        redirected = bind(config, transparent_endpoints(config))
    except ProxyStartError:
        for sock in sockets:
            sock.close()
        raise
    return sockets + redirected, redirected


async def serve(config: ProxyConfig, ruleset: Ruleset, *, resolve: Resolve | None = None,
                on_ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None,
                reload: Callable[[], Ruleset] | None = None,
                metrics_listen: str | None = None,
                reload_text: Callable[[str], Ruleset] | None = None) -> Proxy:
    """Serve until SIGINT/SIGTERM (or `stop`); the proxy (with its counts) when it ends.
    With `reload`, SIGHUP swaps the ruleset for new requests (`proxy:` itself is read at
    start only: a change of listen, user or limits needs a restart). With `reload_text`,
    the agent's child: policies come on stdin, status goes to stdout (`control`)."""
    user = proxy_user(config) if os.geteuid() == 0 else None
    sockets, redirected = _bind_all(config)
    try:
        privsep.raise_fd_limit()
        diag, fast = SockDiag(), SockDiag()
    except OutguardError:
        for sock in sockets:
            sock.close()
        raise
    identity = SocketIdentity(Attributor(diag), fast)
    endpoint: MetricsServer | None = None
    try:
        current = [ruleset]
        lines = Lines()
        proxy = Proxy(lambda: current[0], resolve or resolver_for(ruleset), identity,
                      config.limits, on_record=lines)
        if metrics_listen is not None:  # bound before the drop, as the listeners
            metrics = Metrics()
            metrics.watch(proxy_families(proxy))
            try:
                endpoint = MetricsServer(metrics, metrics_listen)
            except (OSError, ValueError) as exc:
                raise ProxyStartError(f"cannot serve metrics on {metrics_listen}: {exc}") from exc
        if user is not None:
            privsep.drop_privileges(user.uid, user.gid)
        bent = Transparent(proxy, config.transparent_port)
        servers = [await asyncio.start_server(
            bent.handle if sock in redirected else proxy.handle, sock=sock, limit=1 << 16)
            for sock in sockets]
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_cancel)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, _on_hup, loop, reload, current)
        if reload_text is not None:
            _as_child(loop, reload_text, current, proxy, stop)
        who = f"as {user.name} (uid {user.uid})" if user else f"as uid {os.geteuid()}"
        bent_to = (f"; redirected connections (ports {', '.join(map(str, config.transparent))})"
                   f" on port {config.transparent_port}" if config.transparent else "")
        if on_ready is not None:
            on_ready(f"outguard proxy: listening on {', '.join(config.listen)} {who}{bent_to}")
        await stop.wait()
        for server in servers:
            server.close()
        lines.flush()
        print(json.dumps({"requests": {f"{k[0]} {k[1]}": n for k, n in proxy.counts.items()}}),
              file=sys.stderr)
        return proxy
    finally:
        if endpoint is not None:
            endpoint.close()
        for sock in sockets:
            sock.close()
        identity.close()
        diag.close()
        fast.close()
