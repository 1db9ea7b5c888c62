"""`@feed:NAME` in a policy: the feed's content as a named list, with a digest that keeps an
unchanged feed set from ever being re-sent.

Place in the data flow: `policy.load` calls `load_feeds` (as `FEEDS`, the loader
`pipeline.load_policy` passes it) for every `@feed:` reference; the list it
gets is a `FeedList` (a `LoadedList`), which `ruleset.lower` turns into a `Source` filling four
sets (IPv4/IPv6 addresses, IPv4/IPv6 ranges: always all four, so a sync never needs a new rule).
A `url:` feed comes from its last good copy in the state directory; a `file:` feed is read,
parsed and validated now (a refused file falls back to its last good copy, with a warning).

Never-block (`never_block_of`): besides the special ranges and the metadata address, no feed may
block the name servers of /etc/resolv.conf (and systemd-resolved's upstreams), the policy's
`dns.upstreams` (after `outguard dns install` resolv.conf names only 127.0.0.1), and every
address or network (up to /8, /24 for IPv6) an allow rule names — inline, through an inline list
or through a list file. The addresses an allowed *host name* resolves to are not never-block:
with `dns:` they are only learnt at query time, after the feed was loaded, so sparing them at
apply time would protect a name one day and not the next; and a name that comes to point at a
known C2 address is what a feed is for. Allow the address itself to override a feed.

The digest. A kernel set is named after its source's digest (`l_feed_<name>_<digest12>_4a`). The
content digest C covers the copy and the never-block list (the policy's allows and resolvers are
removed at this stage). A sync changes a set's content in place, keeping its name S, and records
"set S now holds C" (`FeedStore.kernel_record`): when that S is still applied, the feed's digest is
S, so a re-apply finds the set unchanged and sends nothing; otherwise it is C, a new set.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from outguard.errors import Problem, StateError
from outguard.feeds.local import read_file
from outguard.feeds.merge import FeedSet, prefixes
from outguard.feeds.parse import parse
from outguard.feeds.registry import FeedError, registry, resolve
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.feeds.validate import NeverBlock, default_never_block, strip_never_block, validate
from outguard.policy.addresses import parse_ip
from outguard.policy.loaded import LoadedList
from outguard.policy.model import PolicyDoc
from outguard.policy.targets import Target, int_to_text
from outguard.ruleset.intervals import addr_texts
from outguard.ruleset.ir import Elements, Source

PREFIX = "feed:"
ALL_KINDS = frozenset({"4a", "4n", "6a", "6n"})
_U32 = struct.Struct(">I")


# /etc/resolv.conf, and the upstreams systemd-resolved uses when /etc/resolv.conf names only
# its stub (127.0.0.53): a feed listing them would cut the host's DNS off just the same
RESOLV_CONFS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
# an allowed network wider than this (0.0.0.0/0, 2000::/3) means "anywhere", not "trust this":
# feeds still block inside it, as deny rules do (the widest network a feed may list, too)
WIDEST_NEVER_BLOCK = {4: 8, 6: 24}


def system_resolvers(paths: Iterable[Path] = RESOLV_CONFS) -> list[str]:
    """Name servers of the resolv.conf files (scope ids dropped, bad lines skipped)."""
    out: list[str] = []
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                addr = parse_ip(fields[1].partition("%")[0])
                if addr is not None and int_to_text(*addr) not in out:
                    out.append(int_to_text(*addr))
    return out


def dns_upstreams(doc: PolicyDoc) -> list[str]:
    """The addresses of the policy's `dns.upstreams` (after `dns install`, resolv.conf names
    only outguard's own resolver, so these are the host's real name servers)."""
    from outguard.policy.dnsconf import parse_endpoint  # noqa: PLC0415

    out: list[str] = []
    for text in doc.dns.upstreams if doc.dns is not None else []:
        try:
            out.append(parse_endpoint(text)[0])
        except ValueError:  # the policy check reports it
            continue
    return out


def allowed_destinations(doc: PolicyDoc, lists: Mapping[str, LoadedList] | None = None,
                         ) -> list[tuple[str, str]]:
    """(address or network, why) for every one an allow rule names: inline, through an inline
    list, or through a list file (`lists`: the policy's loaded lists; without them only the
    inline lists are seen). Host names are not here: see the module docstring."""
    out: list[tuple[str, str]] = []
    for rule in doc.allow:
        for t in rule.to or []:
            if t.kind in ("addr", "net"):
                targets, via = [t], ""
            elif t.kind == "list" and not t.value.startswith(PREFIX):
                via = f" through @{t.value}"
                if lists is not None and t.value in lists:
                    targets = list(lists[t.value].targets)
                elif t.value in doc.lists:
                    targets = list(doc.lists[t.value].items or [])
                else:
                    targets = []
            else:
                continue
            out += [(x.value, f"allowed by rule {rule.name}{via}") for x in targets
                    if x.kind == "addr" or (x.kind == "net" and _narrow(x))]
    return out


def _narrow(target: Target) -> bool:
    length = int(target.value.partition("/")[2] or 128)
    return length >= WIDEST_NEVER_BLOCK[6 if ":" in target.value else 4]


def never_block_of(doc: PolicyDoc | None, lists: Mapping[str, LoadedList] | None = None,
                   resolvers: list[str] | None = None) -> NeverBlock:
    """What no feed of this policy (None: of no policy) may block. `lists`: the policy's loaded
    lists, so that list files count; `resolvers`: instead of the system's."""
    return default_never_block(system_resolvers() if resolvers is None else resolvers,
                               allowed_destinations(doc, lists) if doc is not None else [],
                               dns_upstreams(doc) if doc is not None else [])


def elements_of(content: FeedSet) -> Elements:
    return Elements(
        v4=tuple(addr_texts(content.a4, 4)),
        v6=tuple(addr_texts(content.a6, 6)),
        v4_nets=tuple(p for a, b in content.r4 for p in prefixes(a, b, 4)),
        v6_nets=tuple(p for a, b in content.r6 for p in prefixes(a, b, 6)))


@dataclass
class FeedList(LoadedList):
    """A feed as a policy list; its content is read only when someone needs it."""

    spec: FeedSpec = field(default=None, repr=False)  # type: ignore[assignment]
    content_of: Callable[[], FeedSet] = field(default=FeedSet, repr=False)
    warnings: list[str] = field(default_factory=list)

    @cached_property
    def content(self) -> FeedSet:
        return self.content_of()

    @cached_property
    def targets(self) -> list[Target]:
        """Only its host names (URLhaus): what the DNS resolver needs; addresses go by `source`."""
        return [Target("host", d) for d in self.content.domains]

    def source(self, key: str) -> Source:
        return Source(key, self.digest, lambda: elements_of(self.content), known_kinds=ALL_KINDS,
                      bulk=lambda: self.content)


def _digest(name: str, copy: str, nb: NeverBlock) -> str:
    return hashlib.sha256(f"{PREFIX}{name}\n{copy}\n{nb.digest()}".encode()).hexdigest()


def load_feed(name: str, doc: PolicyDoc, base: Path, store: FeedStore | None,
              known: Callable[[str], bool] | None, nb: NeverBlock) -> FeedList:
    """The list for `@feed:NAME`; FeedError when it cannot be had."""
    spec = resolve(name, doc.feeds)
    if spec.file is not None and not Path(spec.file).is_absolute():
        spec = spec.model_copy(update={"file": str(base / spec.file)})
    warnings: list[str] = []
    body: bytes | None = None
    has_copy = store is not None and store.has_copy(name)
    if spec.file is not None:
        got = read_file(spec)
        if got.status == "ok":
            body = got.body
            copy = hashlib.sha256(spec.format.encode() + b"\n" + body).hexdigest()
        elif store is not None and has_copy:  # as for a refused file: the last good copy stays
            warnings.append(f"feed {name}: {got.error}; keeping its last good copy")
            copy = store.meta(name).digest
        else:
            raise FeedError(f"feed {name}: {got.error}")
    elif store is not None and has_copy:
        copy = store.meta(name).digest
    else:
        copy = "none"
        warnings.append(f"feed {name} has no good copy yet: its sets stay empty until"
                        " `outguard feeds update`")
    digest = _digest(name, copy, nb)
    record = store.kernel_record(name) if store is not None else {}
    held = [s for s, c in record.items() if c == digest]
    where = spec.file or (str(store.copy_path(name)) if store is not None else "")
    if known is not None:
        digest = next((s for s in held if known(s)), digest)
        # the kernel holds it already: read nothing now (but a file with no last good copy is
        # read, to keep one: without it, a later bad file would fail every feed round)
        if known(digest) and (body is None or store is None or has_copy):
            return FeedList(f"{PREFIX}{name}", digest, where, list, spec,
                            lambda: _content(spec, store, nb, []), warnings)
    if body is None:  # a stored copy is read only when someone needs its elements
        return FeedList(f"{PREFIX}{name}", digest, where, list, spec,
                        lambda: _stored(spec, store, nb), warnings)
    content = _from_file(spec, body, store, nb, warnings)
    return FeedList(f"{PREFIX}{name}", digest, where, list, spec, lambda: content, warnings)


def _stored(spec: FeedSpec, store: FeedStore | None, nb: NeverBlock) -> FeedSet:
    """The last good copy, without what `nb` spares."""
    if store is None:
        return FeedSet()
    copy = store.read_copy(spec.name)
    if store.meta(spec.name).nb_digest == nb.digest():
        return copy  # stripped with this very list when it was taken
    return strip_never_block(copy, nb)[0]


def _content(spec: FeedSpec, store: FeedStore | None, nb: NeverBlock,
             warnings: list[str]) -> FeedSet:
    """The feed's content now: a `file:` feed read again, else the last good copy."""
    if spec.file is None:
        return _stored(spec, store, nb)
    got = read_file(spec)
    if got.status != "ok":
        warnings.append(f"feed {spec.name}: {got.error}; keeping its last good copy")
        return _stored(spec, store, nb)
    return _from_file(spec, got.body, store, nb, warnings)


def _from_file(spec: FeedSpec, data: bytes, store: FeedStore | None, nb: NeverBlock,
               warnings: list[str]) -> FeedSet:
    previous = store.meta(spec.name).count if store is not None and store.has_copy(spec.name) \
        else None
    parsed = parse(data, spec.format)
    verdict = validate(spec, data, parsed, previous, nb)
    warnings.extend(f"feed {spec.name}: {a.message}" for a in verdict.alerts)
    if verdict.content is not None:
        if store is not None:
            _keep(store, spec, verdict.content, parsed.bad, len(verdict.removed), nb, warnings)
        return verdict.content
    if store is not None and store.has_copy(spec.name):
        warnings.append(f"feed {spec.name}: keeping its last good copy")
        return strip_never_block(store.read_copy(spec.name), nb)[0]
    raise FeedError("; ".join(str(a) for a in verdict.alerts if a.severity == "error"))


def _keep(store: FeedStore, spec: FeedSpec, content: FeedSet, bad: int, removed: int,
          nb: NeverBlock, warnings: list[str]) -> None:
    """A `file:` feed read and accepted with no last good copy yet gets one: a later refused
    file falls back to it (at apply, in the agent's rounds), `feeds show` sees it. Only then:
    an existing copy is `feeds update`'s to replace (it tells a change, and syncs it); and the
    record keeps no digest, so that the next update syncs what it reads."""
    if store.has_copy(spec.name) or store.read_only:
        return
    try:
        meta = store.meta(spec.name)
        store.write_copy(spec.name, content)
        meta.digest, meta.count, meta.kinds, meta.nb_digest = "", content.count, content.kinds, \
            nb.digest()
        meta.bad_lines, meta.removed, meta.source = bad, removed, spec.source
        meta.fetched_at = meta.attempted_at = time.time()
        store.write_meta(spec.name, meta)
    except (OSError, StateError) as exc:
        warnings.append(f"feed {spec.name}: its last good copy was not kept: {exc}")


def load_feeds(doc: PolicyDoc, refs: dict[str, tuple[str, tuple[int, int]]], base: Path,
               feed_dir: Path | None, known: Callable[[str], bool] | None, source: str,
               problems: list[Problem], lists: Mapping[str, LoadedList] | None = None,
               keep_copies: bool = False) -> tuple[dict[str, LoadedList], list[Problem]]:
    """Lists for every `@feed:` reference (refs: list name → (path, (line, col)) of its first
    use; `lists`: the policy's other lists, loaded). Errors go to `problems`; warnings are
    returned. Only with `keep_copies` (apply) is a `file:` feed's first good read kept as its
    last good copy: every other load only reads the feed store."""
    store = FeedStore(feed_dir, read_only=not keep_copies) if feed_dir is not None else None
    nb = never_block_of(doc, lists)
    out: dict[str, LoadedList] = {}
    warnings: list[Problem] = []
    for list_name, (path, (line, col)) in refs.items():
        name = list_name[len(PREFIX):]
        try:
            loaded = load_feed(name, doc, base, store, known, nb)
        except FeedError as exc:
            problems.append(Problem(source, line, col, path, str(exc)))
            continue
        out[list_name] = loaded
        warnings += [Problem(source, line, col, path, w) for w in loaded.warnings + _misuse(
            doc, list_name, loaded.spec)]
    return out, warnings


class _Feeds:
    """The feeds package as the policy loader's `FeedLoader`; `keep_copies`: apply's, which
    keeps a `file:` feed's first good read as its last good copy (the others only read)."""

    def __init__(self, keep_copies: bool = False) -> None:
        self.keep_copies = keep_copies

    def names(self) -> Collection[str]:
        return registry().keys()

    def __call__(self, doc: PolicyDoc, refs: dict[str, tuple[str, tuple[int, int]]], base: Path,
                 feed_dir: Path | None, known: Callable[[str], bool] | None, source: str,
                 problems: list[Problem], lists: Mapping[str, LoadedList] | None = None,
                 ) -> tuple[dict[str, LoadedList], list[Problem]]:
        return load_feeds(doc, refs, base, feed_dir, known, source, problems, lists,
                          self.keep_copies)


FEEDS = _Feeds()  # what `policy.load` is given to load `@feed:NAME` lists (read only)
KEEPING_FEEDS = _Feeds(keep_copies=True)  # apply's


def _misuse(doc: PolicyDoc, list_name: str, spec: FeedSpec) -> list[str]:
    """Feed uses that silently do nothing, or the opposite of what a feed is for."""
    out = []
    if spec.format in ("hosts", "domains") and doc.dns is None:
        out.append(f"feed {spec.name} lists host names, which only outguard's DNS resolver can"
                   " block: without a `dns:` section it blocks nothing")
    allowing = [r.name for r in doc.allow for t in r.to or []
                if t.kind == "list" and t.value == list_name]
    if allowing:
        out.append(f"feed {spec.name} is used by allow rule {allowing[0]}: a feed is a"
                   " blocklist, that rule lets what it lists through (use it in a deny rule)")
    return out
