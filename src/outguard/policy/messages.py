"""Messages for people: pydantic's and PyYAML's findings rewritten, and "did you mean".

`load` turns each validation error into one `FILE:LINE:COL: path: message`; the message comes
from here. Pydantic's wording ("Input should be a valid list", "Extra inputs are not
permitted") names neither the value nor a way out; these say what was found, what is expected
and, for a misspelt key, value or reference, the closest known one (difflib). Pure.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest known word, or ""."""
    close = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def shown(value: Any) -> str:
    """A value as the message quotes it: short, one line."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_of(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _unwrap(tp: Any) -> list[Any]:
    """The alternatives of an annotation: Annotated and Optional/Union taken apart."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [alt for arg in typing.get_args(tp) for alt in _unwrap(arg)]
    return [tp]


def _step(tp: Any, part: str | int) -> Any:
    """The type found one step down `tp` at `part` (a key or an index), or None."""
    for alt in _unwrap(tp):
        model = _model_of(alt)
        if model is not None and isinstance(part, str):
            for name, info in model.model_fields.items():
                if part in (name, info.alias):
                    return info.annotation
        origin = typing.get_origin(alt)
        if origin is list and isinstance(part, int):
            return typing.get_args(alt)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(alt)[1]
    return None


def keys_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys a mapping at `loc` may hold (their YAML spelling)."""
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    return [info.alias or name for alt in _unwrap(tp) if (model := _model_of(alt)) is not None
            for name, info in model.model_fields.items()]


def _unknown_key(root: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    key = str(loc[-1])
    known = keys_at(root, loc[:-1])
    hint = did_you_mean(key, known)
    if not hint and known:
        hint = f" (known keys: {', '.join(known)})"
    return f"unknown key {key!r}{hint}"


_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected a whole number", "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "list_type": "expected a list, e.g. [a, b]", "tuple_type": "expected a list, e.g. [a, b]",
    "dict_type": "expected a mapping, e.g. {key: value}",
    "model_type": "expected a mapping, e.g. {key: value}",
    "model_attributes_type": "expected a mapping, e.g. {key: value}",
}
_WHEN = "expected a date and time such as 2026-12-31T00:00:00Z, or a date such as 2026-12-31"


def pydantic_message(err: Any, root: type[BaseModel]) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as a message for people."""
    kind, msg, loc = err["type"], str(err["msg"]), tuple(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        if len(choices) <= 1:
            return f"{shown(value)}: must be {expected}"
        return f"{shown(value)} is not one of {expected}{hint}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if kind in _EXPECTED:
        return f"{shown(value)}: {_EXPECTED[kind]}"
    if kind.startswith(("datetime_", "date_")):
        return f"{shown(value)}: {_WHEN}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        words = {"greater_than_equal": "less than the minimum", "greater_than": "not above",
                 "less_than_equal": "more than the maximum", "less_than": "not below"}[kind]
        return f"{shown(value)} is {words} {bound}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} {'entry' if n == 1 else 'entries'}"
    if kind == "too_long":
        return f"holds more than {ctx.get('max_length')} entries"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "is empty"
    return msg[:1].lower() + msg[1:]


# PyYAML's problems, as a person would say them (the original follows in brackets when unknown)
_YAML = [
    ("found a tab character that violates indentation",
     "a tab character in the indentation: YAML indents with spaces only"),
    ("found a tab character where an indentation space is expected",
     "a tab character in the indentation: YAML indents with spaces only"),
    ("did not find expected node content",
     "a value is missing here (an unclosed '[' or '{', or a stray ',')"),
    ("mapping values are not allowed",
     "a ':' where no key can start: check the indentation, or quote a value that holds ': '"),
    ("could not find expected ':'",
     "a key without ':' (or a value that runs over several lines and needs quotes)"),
    ("did not find expected key",
     "this line does not line up with the keys above it (indentation)"),
    ("did not find expected '-' indicator",
     "this line does not line up with the list above it (indentation)"),
    ("expected <block end>, but found", "this line does not line up with the lines above it"
     " (indentation)"),
    ("did not find expected ',' or ']'", "a '[' list is not closed by ']' (or lacks a ',')"),
    ("did not find expected ',' or '}'", "a '{' mapping is not closed by '}' (or lacks a ',')"),
    ("found unexpected end of stream", "the file ends inside quotes or brackets"),
    ("found unknown escape character", "an unknown backslash escape in a \"double-quoted\" text:"
     " use 'single quotes' or double the backslash"),
    ("found undefined alias", "an alias (*name) whose anchor (&name) is not defined before it"),
    ("found duplicate anchor", "the same anchor (&name) is defined twice"),
    ("found unexpected ':'", "an unexpected ':' (quote the value)"),
    ("expected a single document in the stream", "more than one YAML document ('---'):"
     " a policy is one document"),
    ("but found another document", "more than one YAML document ('---'): a policy is one"
     " document"),
]


def yaml_message(problem: str, char: str = "") -> str:
    """A PyYAML scanner/parser problem as a message for people; `char` is the character the
    parser stopped at (the C parser does not name it)."""
    token = re.match(r"found character '(.*)' that cannot start any token", problem)
    if token or problem.startswith("found character that cannot start any token"):
        char = token.group(1) if token else char
        if char in ("\\t", "\t"):
            return "not valid YAML: a tab character: YAML indents with spaces only"
        return f"not valid YAML: {char!r} cannot start a value: put the value in quotes"
    for start, text in _YAML:
        if problem.startswith(start):
            return f"not valid YAML: {text}"
    return f"not valid YAML: {problem}"
