"""Load a policy: file → validated `Policy`, or a `PolicyError` listing every problem at once.

First step of the data flow (policy.yaml → policy → decide / compile). Reads the YAML with
positions, validates it with the pydantic model, then checks what spans the document: unique
rule names, `@list` references, list files (their own `FILE:LINE:COL` errors), and users and
groups that must exist on this machine. Nothing here touches the kernel.
"""

from __future__ import annotations

import grp
import hashlib
import pwd
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from outguard.errors import PolicyError, Problem
from outguard.policy.model import PolicyDoc, Rule
from outguard.policy.targets import LineError, Target, parse_list_lines
from outguard.policy.yamlpos import Positions, YamlSyntaxError, load_yaml


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class LoadedList:
    """A named list: inline entries, or a file read (and parsed only when someone needs it)."""

    name: str
    digest: str
    file: str | None
    _read: Callable[[], list[Target]] = field(repr=False)

    @cached_property
    def targets(self) -> list[Target]:
        return self._read()


@dataclass
class Policy:
    """A loaded, valid policy: the document plus its lists, where it came from and its warnings."""

    doc: PolicyDoc
    lists: dict[str, LoadedList]
    source: str
    text: str
    digest: str
    warnings: list[Problem] = field(default_factory=list)
    positions: Positions = field(default_factory=Positions)

    def rules(self) -> list[tuple[str, int, Rule]]:
        """Every rule with its section and index, deny first (the order they are evaluated)."""
        return ([("deny", i, r) for i, r in enumerate(self.doc.deny)]
                + [("allow", i, r) for i, r in enumerate(self.doc.allow)])


def _message(err: Any) -> str:
    kind, msg, loc = err["type"], err["msg"], err["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "literal_error":
        return f"{err['input']!r}: {msg[0].lower()}{msg[1:]}"
    if msg.startswith("Value error, "):
        return str(msg[len("Value error, "):])
    if kind in ("string_type", "int_type", "list_type", "dict_type", "model_type", "bool_type",
                "datetime_from_date_parsing", "datetime_parsing", "datetime_type"):
        return f"{err['input']!r}: {msg[0].lower()}{msg[1:]}"
    return str(msg)



def _read_list_file(name: str, file: Path, problems: list[Problem],
                    at: Problem) -> LoadedList | None:
    try:
        data = file.read_bytes()
    except OSError as exc:
        problems.append(Problem(at.file, at.line, at.col, at.path,
                                f"cannot read list file: {exc.strerror}"))
        return None
    text = data.decode("utf-8", errors="replace")
    targets: list[Target] = []
    errors = 0
    for _line, item in parse_list_lines(text.splitlines()):
        if isinstance(item, LineError):
            errors += 1
            if errors <= 20:
                problems.append(Problem(str(file), item.line, item.col, f"lists.{name}",
                                        item.message))
        else:
            targets.append(item)
    if errors > 20:
        problems.append(Problem(str(file), 1, 1, f"lists.{name}",
                                f"{errors - 20} more bad lines not shown"))
    if errors:
        return None
    digest = hashlib.sha256(data).hexdigest()
    return LoadedList(name, digest, str(file), _const(targets))


def _const(targets: list[Target]) -> Callable[[], list[Target]]:
    return lambda: targets


def _lazy_list_file(name: str, file: Path, digest: str) -> LoadedList:
    def read() -> list[Target]:
        text = file.read_text("utf-8", errors="replace")
        return [t for _n, t in parse_list_lines(text.splitlines()) if isinstance(t, Target)]
    return LoadedList(name, digest, str(file), read)


def _check_owner(rule: Rule, path: str, where: Callable[[str], tuple[int, int]],
                 source: str, problems: list[Problem]) -> None:
    owner = rule.owner
    if owner is None:
        return
    if owner.user is not None and isinstance(owner.user, str):
        try:
            pwd.getpwnam(owner.user)
        except KeyError:
            problems.append(Problem(source, *where(f"{path}.for.user"), f"{path}.for.user",
                                    f"no user {owner.user!r} on this machine"))
    if owner.group is not None and isinstance(owner.group, str):
        try:
            grp.getgrnam(owner.group)
        except KeyError:
            problems.append(Problem(source, *where(f"{path}.for.group"), f"{path}.for.group",
                                    f"no group {owner.group!r} on this machine"))
    if owner.unit is not None and owner.cgroup is not None:
        problems.append(Problem(source, *where(f"{path}.for"), f"{path}.for",
                                "give either 'unit' or 'cgroup', not both"))
    if all(v is None for v in (owner.user, owner.group, owner.unit, owner.cgroup)):
        problems.append(Problem(source, *where(f"{path}.for"), f"{path}.for",
                                "'for' needs at least one of user, group, unit, cgroup"))


def load_text(text: str, source: str = "<policy>", *, base_dir: Path | None = None,
              known_lists: Callable[[str], bool] | None = None,
              feed_dir: Path | None = None) -> Policy:
    """Validate policy text; any input gives a Policy or a PolicyError. `feed_dir` holds the
    feeds' last good copies (`@feed:NAME`)."""
    try:
        return _load_text(text, source, base_dir=base_dir, known_lists=known_lists,
                          feed_dir=feed_dir)
    except RecursionError:
        raise PolicyError([Problem(source, 1, 1, "", "the document nests too deeply (or refers"
                                   " to itself through a YAML alias)")]) from None
    except (ValueError, OverflowError) as exc:
        # e.g. a NUL byte in a user name or a file name, a date outside what Python can hold:
        # input no check above anticipated is still a policy error, never a crash
        raise PolicyError([Problem(source, 1, 1, "", f"cannot load the policy: {exc}")]) from None


Where = Callable[[str], tuple[int, int]]
NamedRule = tuple[str, int, str | None, Rule | None]  # section, index, name, rule if it is valid


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


def _salvaged_rules(data: dict[str, Any]) -> list[NamedRule]:
    """Rules of a document that failed validation: the valid ones, and the names of the others."""
    out: list[NamedRule] = []
    for section in ("deny", "allow"):
        raw = data.get(section)
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(item, dict):
                continue
            try:
                rule: Rule | None = Rule.model_validate(item)
            except ValidationError:
                rule = None
            name = item.get("name")
            out.append((section, i, name if isinstance(name, str) else None, rule))
    return out


def _raw_list_names(data: dict[str, Any]) -> set[str]:
    lists = data.get("lists")
    return {k for k in lists if isinstance(k, str)} if isinstance(lists, dict) else set()


def _check_rules(rules: Sequence[NamedRule], list_names: set[str], where: Where, source: str,
                 problems: list[Problem]) -> None:
    """Checks across rules: unique names, known @lists, ports only with tcp/udp, real owners."""
    seen: dict[str, str] = {}
    for section, index, name, rule in rules:
        path = f"{section}[{index}]"
        if name is not None and name in seen:
            problems.append(Problem(source, *where(f"{path}.name"), f"{path}.name",
                                    f"rule name {name!r} is already used by {seen[name]}"))
        elif name is not None:
            seen[name] = path
        if rule is None:
            continue
        for j, target in enumerate(rule.to or []):
            if target.kind == "list" and target.value not in list_names \
                    and not target.value.startswith("feed:"):  # feeds: checked by load_feeds
                problems.append(Problem(source, *where(f"{path}.to[{j}]"), f"{path}.to[{j}]",
                                        f"no list named {target.value!r} in 'lists'"))
        if rule.ports and rule.proto == "icmp":
            problems.append(Problem(source, *where(f"{path}.ports"), f"{path}.ports",
                                    "ports need proto tcp, udp or any, not icmp"))
        _check_owner(rule, path, where, source, problems)


def _load_text(text: str, source: str, *, base_dir: Path | None,
               known_lists: Callable[[str], bool] | None, feed_dir: Path | None = None) -> Policy:
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
    try:
        doc = PolicyDoc.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            is_key = err["type"] == "extra_forbidden"
            line, col = pos.of(loc, key=is_key)
            shown = loc[:-1] if err["type"] == "missing" else loc
            problems.append(Problem(source, line, col, format_path(shown), _message(err)))
        # the document checks still run on what did validate: every error at once
        _check_rules(_salvaged_rules(data), _raw_list_names(data), _where(pos), source, problems)
        problems.sort(key=lambda p: (p.line, p.col))
        raise PolicyError(problems) from None
    if problems:
        raise PolicyError(problems)
    where = _where(pos)

    base = base_dir or Path(source).resolve().parent
    lists: dict[str, LoadedList] = {}
    for name, spec in doc.lists.items():
        if (spec.items is None) == (spec.file is None):
            problems.append(Problem(source, *where(f"lists.{name}"), f"lists.{name}",
                                    "a list is either a sequence of entries or {file: PATH}"))
            continue
        if spec.items is not None:
            bad = [i for i, t in enumerate(spec.items) if t.kind == "list"]
            for i in bad:
                problems.append(Problem(source, *where(f"lists.{name}[{i}]"), f"lists.{name}[{i}]",
                                        "a list cannot refer to another list"))
            items = list(spec.items)
            digest = hashlib.sha256("\n".join(t.value for t in items).encode()).hexdigest()
            lists[name] = LoadedList(name, digest, None, _const(items))
            continue
        assert spec.file is not None
        file = Path(spec.file) if Path(spec.file).is_absolute() else base / spec.file
        if known_lists is not None:
            try:
                digest = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError:
                digest = ""
            if digest and known_lists(digest):
                lists[name] = _lazy_list_file(name, file, digest)
                continue
        at = Problem(source, *where(f"lists.{name}.file"), f"lists.{name}.file", "")
        loaded = _read_list_file(name, file, problems, at)
        if loaded is not None:
            lists[name] = loaded

    named = [(section, i, r.name, r) for section, rules in (("deny", doc.deny), ("allow", doc.allow))
             for i, r in enumerate(rules)]
    _check_rules(named, set(doc.lists), where, source, problems)
    feed_refs = {t.value: (f"{s}[{i}].to[{j}]", where(f"{s}[{i}].to[{j}]"))
                 for s, i, _n, r in reversed(named) for j, t in reversed(list(enumerate(r.to or [])))
                 if t.kind == "list" and t.value.startswith("feed:")}
    feed_warnings: list[Problem] = []
    if feed_refs:
        from outguard.feeds.policy import load_feeds  # noqa: PLC0415 - it imports this module

        feed_lists, feed_warnings = load_feeds(doc, feed_refs, base, feed_dir, known_lists, source,
                                               problems, lists)
        lists.update(feed_lists)
    if problems:
        raise PolicyError(problems)
    policy = Policy(doc, lists, source, text, hashlib.sha256(text.encode()).hexdigest(),
                    positions=pos)
    from outguard.policy.lint import lint  # noqa: PLC0415 - lint imports this module

    policy.warnings = lint(policy) + feed_warnings
    return policy


def load_policy(path: str | Path, *, known_lists: Callable[[str], bool] | None = None,
                feed_dir: Path | None = None) -> Policy:
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, 1, "", f"cannot read policy: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PolicyError([Problem(str(path), line, col, "", "the policy is not UTF-8 text")]) from None
    return load_text(text, str(path), base_dir=file.resolve().parent, known_lists=known_lists,
                     feed_dir=feed_dir)
