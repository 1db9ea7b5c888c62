"""nftables JSON commands → `nft -f` script text.

For people (`outguard compile` prints it) and for the one construct nft 1.0.6 cannot take as JSON
(`socket cgroupv2`). Covers exactly the vocabulary `nftables.nft` emits; anything else is a bug
and raises. Every string that reaches the text comes from validated policy fields (rule names,
cgroup paths, comments without quotes), and is quoted here all the same.
"""

from __future__ import annotations

import re
from typing import Any

from outguard.ruleset.keys import SetName

_VERDICTS = ("accept", "drop", "return", "continue")
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_./-]*")


def _q(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"cannot quote {text!r} for nft")
    return f'"{text}"'


def _value(value: Any) -> str:
    if isinstance(value, dict):
        if "elem" in value:  # an element with its own timeout (a DNS set filled at apply)
            return f"{_value(value['elem']['val'])} timeout {int(value['elem']['timeout'])}s"
        if "set" in value:
            return "{ " + ", ".join(_value(v) for v in value["set"]) + " }"
        if "range" in value:
            return f"{_value(value['range'][0])}-{_value(value['range'][1])}"
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "goto" in value:
            return f"goto {value['goto']['target']}"
        if "jump" in value:
            return f"jump {value['jump']['target']}"
    if isinstance(value, list):
        return ",".join(_value(v) for v in value)
    if isinstance(value, str) and value.startswith("@"):
        return value
    return str(value)


def _left(left: dict[str, Any]) -> str:
    if "concat" in left:  # in a concatenation every meta key is written `meta KEY`
        return " . ".join(f"meta {e['meta']['key']}" if "meta" in e else _left(e)
                          for e in left["concat"])
    if "meta" in left:
        key = left["meta"]["key"]
        return key if key in ("oif", "oifname", "skuid", "skgid") else f"meta {key}"
    if "payload" in left:
        return f"{left['payload']['protocol']} {left['payload']['field']}"
    if "ct" in left:
        return f"ct {left['ct']['key']}"
    if "socket" in left:
        return f"socket {left['socket']['key']} level {left['socket']['level']}"
    raise ValueError(f"unknown left side {left}")


def _right(left: dict[str, Any], right: Any) -> str:
    if "meta" in left and left["meta"]["key"] == "time" and isinstance(right, int):
        return str(right)
    if isinstance(right, str) and right.startswith("@"):
        return right
    if "socket" in left or ("meta" in left and left["meta"]["key"] == "oif"):
        return _q(str(right))
    return _value(right)


def expr_text(expr: dict[str, Any]) -> str:
    (kind, body), = expr.items()
    if kind == "match":
        op = "" if body["op"] in ("==", "in") else f"{body['op']} "
        return f"{_left(body['left'])} {op}{_right(body['left'], body['right'])}"
    if kind in _VERDICTS:
        return kind
    if kind in ("goto", "jump"):
        return f"{kind} {body['target']}"
    if kind == "vmap":
        return f"{_left(body['key'])} vmap {body['data']}"
    if kind == "counter":
        return "counter" if body is None else f"counter name {_q(body)}"
    if kind == "limit":
        over = "over " if body.get("inv") else ""
        return f"limit rate {over}{body['rate']}/{body['per']} burst {body['burst']} packets"
    if kind == "log":
        return f"log prefix {_q(body['prefix'])} group {body['group']}"
    if kind == "set":
        stmts = "".join(f" {expr_text(e)}" for e in body.get("stmt", []))
        return f"{body['op']} {body['set']} {{ {_left(body['elem'])}{stmts} }}"
    if kind == "redirect":
        return f"redirect to :{body['port']}"
    if kind == "reject":
        return "reject with tcp reset" if body["type"] == "tcp reset" else \
            f"reject with icmpx {body['expr']}"
    raise ValueError(f"unknown expression {expr}")


def _obj_ref(body: dict[str, Any]) -> str:
    return f"{body['family']} {body['table']} {_name(body['name'])}"


def _name(name: str) -> str:
    # nft's scanner takes identifiers unquoted only; outguard's names are built to fit it
    if not _IDENT.fullmatch(name):
        raise ValueError(f"{name!r} is not an nft identifier")
    return name


def command_text(cmd: dict[str, Any]) -> str:
    (verb, obj), = cmd.items()
    if verb == "metainfo":
        return ""
    (kind, body), = obj.items()
    if kind == "table":
        return f"{verb} table {body['family']} {body['name']}"
    if kind == "counter":
        return f"{verb} counter {_obj_ref(body)}"
    if kind in ("set", "map"):
        if verb != "add":
            return f"{verb} {kind} {_obj_ref(body)}"
        key = " . ".join(body["type"]) if isinstance(body["type"], list) else body["type"]
        typ = f"{key} : {body['map']}" if kind == "map" else key
        flags = f" flags {','.join(body['flags'])};" if body.get("flags") else ""
        size = f" size {int(body['size'])};" if body.get("size") is not None else ""
        timeout = f" timeout {int(body['timeout'])}s;" if body.get("timeout") is not None else ""
        return f"add {kind} {_obj_ref(body)} {{ type {typ};{flags}{timeout}{size} }}"
    if kind == "element":
        # a cgroup set's elements are paths, which nft reads only as quoted strings
        value = _q if SetName.kind_of(body["name"]) == "c" else _value
        items = [f"{_value(e[0])} : {_value(e[1])}" if isinstance(e, list) else value(e)
                 for e in body["elem"]]
        return f"add element {_obj_ref(body)} {{ {', '.join(items)} }}"
    if kind == "chain":
        if verb != "add" or "hook" not in body:
            return f"{verb} chain {_obj_ref(body)}"
        return (f"add chain {_obj_ref(body)} {{ type {body['type']} hook {body['hook']} priority"
                f" {body['prio']}; policy {body['policy']}; }}")
    if kind == "rule":
        text = " ".join(expr_text(e) for e in body["expr"])
        if body.get("comment"):
            text += f" comment {_q(body['comment'])}"
        return f"add rule {body['family']} {body['table']} {_name(body['chain'])} {text}"
    raise ValueError(f"unknown command {cmd}")


def needs_text(cmds: list[dict[str, Any]]) -> bool:
    """Do these commands hold a rule that only nft's text syntax can say (a `socket cgroupv2`
    match)? Read from the rules' expressions: a comment that says "socket" is no such rule."""
    return any(_socket_match(expr) for cmd in cmds if isinstance(cmd, dict)
               and isinstance(add := cmd.get("add"), dict) and isinstance(rule := add.get("rule"), dict)
               for expr in rule.get("expr") or [])


def _socket_match(expr: Any) -> bool:
    match = expr.get("match") if isinstance(expr, dict) else None
    return isinstance(match, dict) and isinstance(match.get("left"), dict) \
        and "socket" in match["left"]


def script(cmds: list[dict[str, Any]]) -> str:
    return "\n".join(line for line in (command_text(c) for c in cmds) if line) + "\n"
