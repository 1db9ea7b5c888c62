"""YAML text → plain data plus the line and column of every value and key.

PyYAML's node graph keeps positions that its constructors throw away; the policy loader needs
them to report `FILE:LINE:COL: path: message`. Built on `yaml.compose` with a resolver reduced to
null, booleans (true/false only) and decimal integers, so YAML 1.1 surprises never reach a policy:
`no` stays the string "no", `22:22` is not a base-60 number, and `2001:db8::10` is text.
Duplicate keys are reported instead of silently keeping the last one.

Anchors and aliases (`&ports [80, 443]` … `*ports`) are allowed, but what aliases bring in is
counted: beyond `MAX_ALIAS_VALUES` values the document is refused. A few hundred bytes of nested
aliases ("billion laughs") otherwise expand to billions of values and exhaust memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from outguard.policy.messages import yaml_message

MAX_ALIAS_VALUES = 10_000  # values that aliases may add to a document, all aliases together

PathPart = str | int
Path = tuple[PathPart, ...]

try:  # the C parser is several times faster on large policies; pure Python where it is missing
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _BaseLoader = yaml.SafeLoader


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader with only the implicit types a policy needs."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {}


_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                              ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"),
                              list("-+0123456789"))


@dataclass
class Positions:
    """Where each value (and each mapping key) of a document stands, 1-based."""

    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        if key and path in table:
            return table[path]
        probe = path
        while probe:
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))


@dataclass(frozen=True)
class YamlProblem:
    line: int
    col: int
    path: Path
    message: str


class YamlSyntaxError(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def _scalar(node: yaml.ScalarNode) -> Any:
    tag = node.tag
    if tag.endswith(":null"):
        return None
    if tag.endswith(":bool"):
        return node.value.lower() == "true"
    if tag.endswith(":int"):
        return int(node.value)
    if tag.endswith(":str"):
        return node.value
    raise ValueError(f"unsupported YAML tag {node.tag!r}")


class _Walk:
    """One document's walk: the nodes seen, and how many values aliases have added."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.aliased = 0


def _walk(node: yaml.Node, path: Path, pos: Positions, problems: list[YamlProblem],
          walk: _Walk, in_alias: bool = False) -> Any:
    mark = node.start_mark
    if id(node) in walk.seen:
        in_alias = True  # the composer hands an alias over as the anchored node itself
    walk.seen.add(id(node))
    if in_alias:
        walk.aliased += 1
        if walk.aliased > MAX_ALIAS_VALUES:
            raise YamlSyntaxError(mark.line + 1, mark.column + 1,
                                  f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values"
                                  " (a 'billion laughs' document?): write the values out")
    pos.values[path] = (mark.line + 1, mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar(node)
        except ValueError as exc:
            problems.append(YamlProblem(mark.line + 1, mark.column + 1, path, str(exc)))
            return None
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), pos, problems, walk, in_alias)
                for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            kmark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(YamlProblem(kmark.line + 1, kmark.column + 1, path,
                                            "a mapping key must be plain text"))
                continue
            key = key_node.value
            if key in out:
                problems.append(YamlProblem(kmark.line + 1, kmark.column + 1, (*path, key),
                                            f"duplicate key {key!r}"))
                continue
            pos.keys[(*path, key)] = (kmark.line + 1, kmark.column + 1)
            out[key] = _walk(value_node, (*path, key), pos, problems, walk, in_alias)
        return out
    raise ValueError(f"unsupported YAML node {node!r}")  # pragma: no cover


def load_yaml(text: str) -> tuple[Any, Positions, list[YamlProblem]]:
    """Parse one YAML document. Raises YamlSyntaxError on text that is not YAML at all."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        lines = text.splitlines()
        char = lines[line - 1][col - 1:col] if mark and line <= len(lines) else ""
        raise YamlSyntaxError(line, col, yaml_message(exc.problem or str(exc), char)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, 1, f"not valid YAML: {exc}") from exc
    pos = Positions()
    problems: list[YamlProblem] = []
    if node is None:
        return None, pos, problems
    data = _walk(node, (), pos, problems, _Walk())
    return data, pos, problems
