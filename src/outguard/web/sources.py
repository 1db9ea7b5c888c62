"""What the dashboard reads, and from where: the store, the state directory, the agent's parts.

Place in the data flow: `service.webserve` builds `Sources` from the running agent (its kernel
counters, metrics registry, feeds, applied policy); the routes of `outguard.web.app` read only
through it. The store is opened read-only with a connection of its own (WAL lets it read beside
the agent's writer thread), and every blocking read runs on a worker thread (`call`), never on
the agent's event loop. `Sampler` keeps the last hour of the rule counters for the sparklines.
`Web` holds them for the routes (`web_of(request)`) and renders the pages: Jinja2 with
autoescape on, so a cmdline, a DNS name or a path is text in every page, whatever it holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from outguard.feeds.freshness import FeedFreshness
from outguard.policy.loaded import Policy
from outguard.ruleset.ir import Ruleset
from outguard.store import StoreError
from outguard.store.sqlite import SQLiteStore
from outguard.web.auth import CSRF_FIELD, Secrets

T = TypeVar("T")
Counters = dict[str, tuple[int, int]]  # kernel counter name → (packets, bytes)


class Reader:
    """The store, opened read-only on first use (the agent makes and migrates the file first;
    until then, and while it cannot be opened, every read raises StoreError)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: SQLiteStore | None = None

    def store(self) -> SQLiteStore:
        if self._store is None:
            self._store = SQLiteStore(self.path, readonly=True)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


@dataclass
class Sources:
    state_dir: Path
    store_path: Path
    counters: Callable[[], Counters] | None = None  # None: no kernel (a test's source)
    metrics: Callable[[], bytes] | None = None  # the Prometheus text, for /metrics
    feeds: Callable[[], list[FeedFreshness]] = list
    policy: Callable[[], Policy | None] = lambda: None  # the policy the agent serves
    reader: Reader = field(init=False)
    # the policy in service, lowered once for the explains (a feed's million entries make
    # lowering take seconds): kept until the agent serves another policy object
    _lowered: tuple[Policy, Ruleset] | None = field(default=None, init=False, repr=False)
    _kept: dict[str, tuple[float, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = Reader(self.store_path)

    def kept(self, key: str, make: Callable[[], T], seconds: float) -> T:
        """`make()`, reused for `seconds` (a suggestion over a million learned flows takes
        seconds: not once per page view)."""
        now = time.monotonic()
        got = self._kept.get(key)
        if got is not None and now - got[0] < seconds:
            value: T = got[1]
            return value
        value = make()
        self._kept[key] = (now, value)
        return value

    def ruleset(self) -> Ruleset | None:
        """The policy in service as a ruleset, its host names not resolved (a DNS lookup per
        page view would leave the machine); None when no policy is served."""
        policy = self.policy()
        if policy is None:
            return None
        if self._lowered is None or self._lowered[0] is not policy:
            from outguard.pipeline import lower_policy  # noqa: PLC0415

            self._lowered = (policy, lower_policy(policy, resolver=lambda _name: []))
        return self._lowered[1]

    async def call(self, fn: Callable[[SQLiteStore], T]) -> T:
        """`fn(store)` on a worker thread: SQLite blocks."""
        return await asyncio.to_thread(lambda: fn(self.reader.store()))

    def read_counters(self) -> Counters:
        if self.counters is None:
            return {}
        with contextlib.suppress(Exception):  # an unreadable kernel is shown as no counters
            return dict(self.counters())
        return {}

    def close(self) -> None:
        self.reader.close()


class Sampler:
    """Packets per decision key, sampled every `every` seconds for the last `span` seconds:
    the overview's sparklines (the kernel keeps totals only)."""

    def __init__(self, read: Callable[[], dict[str, int]], *, every: float = 30.0,
                 span: float = 3600.0) -> None:
        self.read, self.every = read, every
        self.samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=max(2, int(span / every) + 1))

    def sample(self, now: float | None = None) -> None:
        with contextlib.suppress(Exception):  # a failed read leaves a gap, not a dead task
            self.samples.append((time.time() if now is None else now, dict(self.read())))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)  # the state files and the kernel's counters
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def series(self, key: str) -> list[int]:
        """Packets counted per interval (the differences of the totals; a reset counts 0)."""
        # list(): one C-level copy, so a sample appended meanwhile (the sampler's worker
        # thread) cannot break the walk
        totals = [s.get(key, 0) for _t, s in list(self.samples)]
        return [max(0, b - a) for a, b in itertools.pairwise(totals)]


def status_of(src: Sources, now: float) -> dict[str, Any]:
    """`outguard status --json`'s dictionary, from the state directory and the kernel's counters
    the agent reads (the table's objects and rules are not read here: no drift check)."""
    from outguard import agentstate  # noqa: PLC0415
    from outguard.apply.status import status  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    counters = src.read_counters()
    state = StateDir(src.state_dir)
    table = bool(counters) if src.counters is not None else state.read("applied") is not None
    info = status(state, counters, table, agent=agentstate.read(src.state_dir),
                  clock=lambda: now)
    info["problems"] = [p for p in info["problems"] if not p.startswith("drift unknown")]
    return info


def store_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def rule_packets(src: Sources) -> dict[str, int]:
    """Packets per decision key ("deny:tor") of the applied policy, from the kernel's counters:
    what the sampler records."""
    from outguard.state import StateDir  # noqa: PLC0415

    snap = StateDir(src.state_dir).snapshot("applied")
    if snap is None:
        return {}
    counters = src.read_counters()
    return {key: counters.get(name, (0, 0))[0] for key, name in snap.counters.items()}


NAV = (("/", "Overview"), ("/incidents", "Incidents"), ("/top", "Top"), ("/feeds", "Feeds"),
       ("/dns", "DNS"), ("/learned", "Learned"))


@dataclass
class Web:
    """What every route reads: the sources, the keys, the sampler, the templates."""

    sources: Sources
    keys: Secrets
    sampler: Sampler
    secure: bool = False  # served over TLS: the cookie says Secure
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    token_path: str = "STATE_DIR/web.token"  # where the token is, as the login form says
    env: Environment = field(default_factory=lambda: Environment(
        loader=PackageLoader("outguard.web", "templates"), autoescape=True,
        trim_blocks=True, lstrip_blocks=True))

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            nav=NAV, path=request.url.path, csrf=self.keys.csrf, csrf_field=CSRF_FIELD, **ctx)
        return HTMLResponse(html, status_code=status)


def web_of(request: Request) -> Web:
    got: Web = request.app.state.web
    return got


