"""`@feed:NAME` in a policy: the feed's content as a named list, with a digest that keeps an
unchanged feed set from ever being re-sent.

Place in the data flow: `policy.load` calls `load_feeds` for every `@feed:` reference; the list it
gets is a `FeedList` (a `LoadedList`), which `compile.lower` turns into a `Source` filling four
sets (IPv4/IPv6 addresses, IPv4/IPv6 ranges: always all four, so a sync never needs a new rule).
A `url:` feed comes from its last good copy in the state directory; a `file:` feed is read,
parsed and validated now (a refused file falls back to its last good copy, with a warning).

The digest. A kernel set is named after its source's digest (`l_feed_<name>_<digest12>_4a`). The
content digest C covers the copy and the never-block list (the policy's allows and resolvers are
removed at this stage). A sync changes a set's content in place, keeping its name S, and records
"set S now holds C" (`FeedStore.kernel_record`): when that S is still applied, the feed's digest is
S, so a re-apply finds the set unchanged and sends nothing; otherwise it is C, a new set.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from outguard.compile.intervals import addr_texts
from outguard.compile.ir import Elements, Source
from outguard.errors import Problem
from outguard.feeds.local import read_file
from outguard.feeds.merge import FeedSet, prefixes
from outguard.feeds.parse import parse
from outguard.feeds.registry import FeedError, resolve
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.feeds.validate import NeverBlock, default_never_block, strip_never_block, validate
from outguard.policy.load import LoadedList
from outguard.policy.model import PolicyDoc
from outguard.policy.targets import Target

PREFIX = "feed:"
ALL_KINDS = frozenset({"4a", "4n", "6a", "6n"})
_U32 = struct.Struct(">I")


def system_resolvers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [p[1] for line in lines if len(p := line.split()) >= 2 and p[0] == "nameserver"]


def allowed_destinations(doc: PolicyDoc) -> list[str]:
    """Addresses and networks the policy allows explicitly (inline lists included)."""
    out: list[str] = []
    for rule in doc.allow:
        for t in rule.to or []:
            if t.kind in ("addr", "net"):
                out.append(t.value)
            elif t.kind == "list" and t.value in doc.lists:
                out += [x.value for x in doc.lists[t.value].items or [] if x.kind in ("addr", "net")]
    return out


def never_block_of(doc: PolicyDoc, resolvers: list[str] | None = None) -> NeverBlock:
    return default_never_block(system_resolvers() if resolvers is None else resolvers,
                               allowed_destinations(doc))


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
    if spec.file is not None:
        got = read_file(spec)
        if got.status != "ok":
            raise FeedError(f"feed {name}: {got.error}")
        copy = hashlib.sha256(spec.format.encode() + b"\n" + got.body).hexdigest()
    elif store is not None and store.has_copy(name):
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
        if known(digest):  # the kernel holds it already: read nothing now
            return FeedList(f"{PREFIX}{name}", digest, where, list, spec,
                            lambda: _content(spec, store, nb, []), warnings)
    if spec.file is None:  # a url feed's copy is read only when someone needs its elements
        return FeedList(f"{PREFIX}{name}", digest, where, list, spec,
                        lambda: _content(spec, store, nb, []), warnings)
    content = _content(spec, store, nb, warnings)
    return FeedList(f"{PREFIX}{name}", digest, where, list, spec, lambda: content, warnings)


def _content(spec: FeedSpec, store: FeedStore | None, nb: NeverBlock,
             warnings: list[str]) -> FeedSet:
    if spec.file is None:
        if store is None:
            return FeedSet()
        copy = store.read_copy(spec.name)
        if store.meta(spec.name).nb_digest == nb.digest():
            return copy  # stripped with this very list when it was taken
        return strip_never_block(copy, nb)[0]
    got = read_file(spec)
    data = got.body
    previous = store.meta(spec.name).count if store is not None and store.has_copy(spec.name) \
        else None
    parsed = parse(data, spec.format)
    verdict = validate(spec, data, parsed, previous, nb)
    warnings.extend(f"feed {spec.name}: {a.message}" for a in verdict.alerts)
    if verdict.content is not None:
        return verdict.content
    if store is not None and store.has_copy(spec.name):
        warnings.append(f"feed {spec.name}: keeping its last good copy")
        return strip_never_block(store.read_copy(spec.name), nb)[0]
    raise FeedError("; ".join(str(a) for a in verdict.alerts if a.severity == "error"))


def load_feeds(doc: PolicyDoc, refs: dict[str, tuple[str, tuple[int, int]]], base: Path,
               feed_dir: Path | None, known: Callable[[str], bool] | None, source: str,
               problems: list[Problem]) -> tuple[dict[str, LoadedList], list[Problem]]:
    """Lists for every `@feed:` reference (refs: list name → (path, (line, col)) of its first
    use). Errors go to `problems`; warnings are returned."""
    store = FeedStore(feed_dir) if feed_dir is not None else None
    nb = never_block_of(doc)
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
        warnings += [Problem(source, line, col, path, w) for w in loaded.warnings]
    return out, warnings
