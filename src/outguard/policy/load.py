"""Load a policy: file → validated `Policy`, or a `PolicyError` listing every problem at once.

First step of the data flow (policy.yaml → policy → decide / compile). Reads the file (a capped
regular file: `files`) and the YAML with positions (`yamlpos`), validates it with the pydantic
model, then runs the checks across the document (`checks`: rule names, `@list` and `@feed:`
references, owners, the `dns:` section, denies that cover an upstream) and reads list files —
on whatever part of the document validated, so that shape errors never hide the others. Each
problem is `FILE:LINE:COL: path: message` (`messages` words it). A valid policy then gets its
warnings (`checks`, `lint`). Nothing here touches the kernel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from outguard.errors import PolicyError, Problem
from outguard.policy.checks import (
    Where,
    as_written_warnings,
    check_dns,
    check_rules,
    check_upstreams_not_denied,
    mapped_message,
    rules_as_written,
    rules_of,
)
from outguard.policy.files import MAX_LIST_BYTES, MAX_POLICY_BYTES, FileRefusedError, read_capped
from outguard.policy.lint import lint
from outguard.policy.loaded import LoadedList, Policy, format_path
from outguard.policy.messages import pydantic_message
from outguard.policy.model import PolicyDoc
from outguard.policy.proxyconf import proxy_process_warnings, proxy_user_problem
from outguard.policy.targets import LineError, Target, is_mapped, parse_list_lines, parse_target
from outguard.policy.yamlpos import Positions, YamlSyntaxError, load_yaml


def _read_list_file(name: str, file: Path, problems: list[Problem], warnings: list[Problem],
                    at: Problem) -> LoadedList | None:
    try:
        data = read_capped(file, MAX_LIST_BYTES)
    except FileRefusedError as exc:
        problems.append(Problem(at.file, at.line, at.col, at.path,
                                f"cannot read list file {str(file)!r}: {exc}"))
        return None
    lines = data.decode("utf-8", errors="replace").splitlines()
    targets: list[Target] = []
    errors = mapped = 0
    first_mapped = 0
    bad: list[Problem] = []
    for line, item in parse_list_lines(lines):
        if isinstance(item, LineError):
            errors += 1
            if errors <= 20:
                bad.append(Problem(str(file), item.line, item.col, f"lists.{name}", item.message))
        else:
            if item.version == 4 and ":" in lines[line - 1]:
                mapped += 1
                first_mapped = first_mapped or line
            targets.append(item)
    if errors > 3 and not targets:  # not a list at all (a wrong path?): one line, not twenty
        problems.append(Problem(at.file, at.line, at.col, at.path,
                                f"{str(file)!r} is not a list file: none of its {errors} lines is"
                                " an IP address, network or host name"))
        return None
    problems.extend(bad)
    if errors > 20:
        problems.append(Problem(str(file), 1, 1, f"lists.{name}",
                                f"{errors - 20} more bad lines not shown"))
    if errors:
        return None
    if mapped:
        warnings.append(Problem(str(file), first_mapped, 1, f"lists.{name}",
                                f"{mapped} IPv4-mapped IPv6 address(es) (::ffff:a.b.c.d) read as"
                                " the IPv4 addresses they stand for"))
    if not targets:
        warnings.append(Problem(at.file, at.line, at.col, at.path,
                                f"list file {str(file)!r} holds no entry: rules that use"
                                f" @{name} match nothing through it"))
    digest = hashlib.sha256(data).hexdigest()
    return LoadedList(name, digest, str(file), _const(targets))


def _const(targets: list[Target]) -> Callable[[], list[Target]]:
    return lambda: targets


def _lazy_list_file(name: str, file: Path, digest: str) -> LoadedList:
    def read() -> list[Target]:
        try:
            data = read_capped(file, MAX_LIST_BYTES)
        except FileRefusedError as exc:
            raise PolicyError([Problem(str(file), 1, 1, f"lists.{name}",
                                       f"cannot read list file: {exc}")]) from None
        text = data.decode("utf-8", errors="replace")
        return [t for _n, t in parse_list_lines(text.splitlines()) if isinstance(t, Target)]
    return LoadedList(name, digest, str(file), read)


class FeedLoader(Protocol):
    """What turns `@feed:NAME` references into lists: `feeds.policy.FEEDS`, which the feeds
    package (above this one) provides, and `pipeline.load_policy` passes in. Without one, a
    policy that refers to a feed does not load."""

    def names(self) -> Collection[str]:
        """The feeds known besides the policy's own `feeds:` (the shipped registry)."""
        ...

    def __call__(self, doc: PolicyDoc, refs: dict[str, tuple[str, tuple[int, int]]], base: Path,
                 feed_dir: Path | None, known: Callable[[str], bool] | None, source: str,
                 problems: list[Problem], lists: Mapping[str, LoadedList] | None = None,
                 ) -> tuple[dict[str, LoadedList], list[Problem]]:
        """Lists for every reference (refs: list name → (path, (line, col)) of its first use;
        `lists`: the policy's other lists, loaded). Errors go to `problems`; warnings are
        returned."""
        ...


def load_text(text: str, source: str = "<policy>", *, base_dir: Path | None = None,
              known_lists: Callable[[str], bool] | None = None,
              feed_dir: Path | None = None, feeds: FeedLoader | None = None) -> Policy:
    """Validate policy text; any input gives a Policy or a PolicyError. `feeds` loads the
    `@feed:NAME` lists, from the last good copies in `feed_dir`."""
    try:
        return _load_text(text, source, base_dir=base_dir, known_lists=known_lists,
                          feed_dir=feed_dir, feeds=feeds)
    except RecursionError:
        raise PolicyError([Problem(source, 1, 1, "", "the document nests too deeply (or refers"
                                   " to itself through a YAML alias)")]) from None
    except (ValueError, OverflowError) as exc:
        # e.g. a NUL byte in a user name or a file name, a date outside what Python can hold:
        # input no check above anticipated is still a policy error, never a crash
        raise PolicyError([Problem(source, 1, 1, "", f"cannot load the policy: {exc}")]) from None


def _where(pos: Positions) -> Where:
    def where(dotted: str) -> tuple[int, int]:
        path: list[str | int] = []
        for part in dotted.replace("[", ".[").split("."):
            if part.startswith("["):
                path.append(int(part[1:-1]))
            elif part:
                path.append(part)
        return pos.of(tuple(path))
    return where


def _valid(part: dict[str, Any]) -> bool:
    try:
        PolicyDoc.model_validate({"version": 1, **part})
    except ValidationError:
        return False
    return True


def _salvage(data: dict[str, Any]) -> PolicyDoc:
    """The valid part of a document that failed validation: each section, list entry, list,
    feed and alert that validates on its own. Rules are taken from `rules_as_written`."""
    clean: dict[str, Any] = {}
    for key, raw in data.items():
        if key in ("version", "allow", "deny") or key not in PolicyDoc.model_fields:
            continue
        value = raw
        if isinstance(raw, list) and key == "alerts":
            value = [v for v in raw if _valid({key: [v]})]
        elif isinstance(raw, dict) and key in ("lists", "feeds"):
            value = {k: v for k, v in raw.items() if _valid({key: {k: v}})}
        if _valid({key: value}):
            clean[key] = value
    return PolicyDoc.model_validate({"version": 1, **clean})


def _shape_problems(exc: ValidationError, data: dict[str, Any], pos: Positions,
                    source: str) -> list[Problem]:
    out = []
    raw = data.get("lists")
    lists: dict[Any, Any] = raw if isinstance(raw, dict) else {}
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if loc[:1] == ("lists",) and loc[2:3] == ("items",) and isinstance(lists.get(loc[1]), list):
            loc = loc[:2] + loc[3:]  # `name: [..]` is read as `name: {items: [..]}`
        line, col = pos.of(loc, key=err["type"] == "extra_forbidden")
        shown = loc[:-1] if err["type"] == "missing" else loc
        out.append(Problem(source, line, col, format_path(shown), pydantic_message(err, PolicyDoc)))
    return out


def _load_lists(doc: PolicyDoc, base: Path, known_lists: Callable[[str], bool] | None,
                where: Where, source: str, problems: list[Problem],
                warnings: list[Problem]) -> dict[str, LoadedList]:
    lists: dict[str, LoadedList] = {}
    for name, spec in doc.lists.items():
        if (spec.items is None) == (spec.file is None):
            problems.append(Problem(source, *where(f"lists.{name}"), f"lists.{name}",
                                    "a list is either a sequence of entries or {file: PATH}"))
            continue
        if spec.items is not None:
            for i, t in enumerate(spec.items):
                if t.kind == "list":
                    problems.append(Problem(source, *where(f"lists.{name}[{i}]"),
                                            f"lists.{name}[{i}]",
                                            "a list cannot refer to another list"))
            items = list(spec.items)
            digest = hashlib.sha256("\n".join(t.value for t in items).encode()).hexdigest()
            lists[name] = LoadedList(name, digest, None, _const(items))
            continue
        assert spec.file is not None
        file = Path(spec.file) if Path(spec.file).is_absolute() else base / spec.file
        if known_lists is not None:
            try:
                digest = hashlib.sha256(read_capped(file, MAX_LIST_BYTES)).hexdigest()
            except FileRefusedError:
                digest = ""
            if digest and known_lists(digest):
                lists[name] = _lazy_list_file(name, file, digest)
                continue
        at = Problem(source, *where(f"lists.{name}.file"), f"lists.{name}.file", "")
        loaded = _read_list_file(name, file, problems, warnings, at)
        if loaded is not None:
            lists[name] = loaded
    return lists


def _raw_list_warnings(data: dict[str, Any], where: Where, source: str) -> list[Problem]:
    """IPv4-mapped entries of inline lists, as written."""
    out = []
    raw = data.get("lists")
    for name, spec in (raw.items() if isinstance(raw, dict) else []):
        entries = spec.get("items") if isinstance(spec, dict) else spec
        for i, text in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(text, str) and is_mapped(text):
                at = f"lists.{name}[{i}]"
                out.append(Problem(source, *where(at), at, mapped_message(text, parse_target(text))))
    return out


def _order(source: str) -> Callable[[Problem], tuple[bool, int, int]]:
    """The policy file's problems in file order, then those of list files as found."""
    def key(p: Problem) -> tuple[bool, int, int]:
        return (False, p.line, p.col) if p.file == source else (True, 0, 0)
    return key


def _load_text(text: str, source: str, *, base_dir: Path | None,
               known_lists: Callable[[str], bool] | None, feed_dir: Path | None = None,
               feeds: FeedLoader | None = None) -> Policy:
    """Validate policy text. `known_lists(digest)` says a list file with that content was already
    validated (by an earlier apply), so a million-line list is not parsed again."""
    problems: list[Problem] = []
    try:
        data, pos, yproblems = load_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyError([Problem(source, exc.line, exc.col, "", exc.message)]) from None
    for yp in yproblems:
        problems.append(Problem(source, yp.line, yp.col, format_path(yp.path), yp.message))
    if not isinstance(data, dict):
        problems.append(Problem(source, 1, 1, "", "a policy is a mapping with at least 'version: 1'"))
        raise PolicyError(problems)
    where = _where(pos)
    try:
        doc = PolicyDoc.model_validate(data)
        rules = rules_of(doc.deny, doc.allow)
    except ValidationError as exc:
        # every error at once: the checks below still run on whatever did validate
        problems += _shape_problems(exc, data, pos, source)
        doc = _salvage(data)
        rules = rules_as_written(data)
    warnings: list[Problem] = []

    base = base_dir or Path(source).resolve().parent
    lists = _load_lists(doc, base, known_lists, where, source, problems, warnings)
    raw_lists = data.get("lists")
    list_names = {k for k in raw_lists if isinstance(k, str)} if isinstance(raw_lists, dict) \
        else set()
    raw_feeds = data.get("feeds")
    feed_names: set[str] | None = None
    if feeds is not None:
        feed_names = {k for k in raw_feeds if isinstance(k, str)} \
            if isinstance(raw_feeds, dict) else set()
        if "feed:" in text:  # the shipped registry is read only when the policy names a feed
            feed_names |= set(feeds.names())
    check_rules(rules, list_names, feed_names, where, source, problems)
    feed_refs = {t.value: (f"{nr.path}.to[{j}]", where(f"{nr.path}.to[{j}]"))
                 for nr in reversed(rules) if nr.rule is not None
                 for j, t in reversed(list(zip(nr.to_index, nr.rule.to or [], strict=False)))
                 if t.kind == "list" and t.value.startswith("feed:")
                 and t.value[len("feed:"):] in (feed_names or ())}
    if feeds is not None and feed_refs:
        feed_lists, feed_warnings = feeds(doc, feed_refs, base, feed_dir, known_lists, source,
                                          problems, lists)
        lists.update(feed_lists)
        warnings += feed_warnings
    if doc.dns is not None:
        uid = check_dns(doc.dns, base, where, source, problems, warnings)

        def list_targets(name: str) -> list[Target] | None:
            known = name in lists and not name.startswith("feed:")
            return lists[name].targets if known else None

        check_upstreams_not_denied(doc.dns, uid, rules, list_targets, where, source, problems)
    if doc.proxy is not None:
        if (why := proxy_user_problem(doc.proxy)) is not None:
            problems.append(Problem(source, *where("proxy.user"), "proxy.user", why))
        warnings += proxy_process_warnings(doc, where, source)
    if problems:
        # the policy file's problems in file order, then those found in list files
        problems.sort(key=_order(source))
        raise PolicyError(problems)
    policy = Policy(doc, lists, source, text, hashlib.sha256(text.encode()).hexdigest(),
                    positions=pos)
    warnings += as_written_warnings(data, rules, where, source) \
        + _raw_list_warnings(data, where, source)
    policy.warnings = sorted(warnings + lint(policy), key=_order(source))
    return policy


def load_policy(path: str | Path, *, known_lists: Callable[[str], bool] | None = None,
                feed_dir: Path | None = None, feeds: FeedLoader | None = None) -> Policy:
    """`load_text` of a policy file (a capped regular file, UTF-8)."""
    file = Path(path)
    try:
        data = read_capped(file, MAX_POLICY_BYTES)
    except FileRefusedError as exc:
        raise PolicyError([Problem(str(path), 1, 1, "", f"cannot read policy: {exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PolicyError([Problem(str(path), line, col, "", "the policy is not UTF-8 text")]) from None
    return load_text(text, str(path), base_dir=file.resolve().parent, known_lists=known_lists,
                     feed_dir=feed_dir, feeds=feeds)
