"""Resource and rule names for the cloud targets (aws, azure, gcp, terraform): unique the way
each cloud compares them.

Place in the data flow: an exporter (`export.gcp`, `export.azure`, `export.aws`,
`export.terraform_*`) asks a `NameBook` for the name of each thing it writes.

A policy's rule names are unique as written (`Web.API`, `web-api` and `web_api` are three
rules), but every cloud narrows the charset (GCP: `[a-z0-9-]`) or compares names without case
(Azure resource names), so the forms can collide and the second create fails, or worse, a
deployment silently overwrites the first rule with the second. A `NameBook` hands out each
name once, in the target's form: a later name that would collide gets a short suffix made
from the original text's hash, which stays the same from one export to the next.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


class NameBook:
    """Unique names of one kind (one namespace of the target)."""

    def __init__(self, form: Callable[[str], str], limit: int, *, fold: bool = True,
                 sep: str = "-") -> None:
        self._form = form
        self._limit = limit
        self._fold = fold
        self._sep = sep
        self._taken: dict[str, str] = {}  # compared form → the text that took it

    def _key(self, name: str) -> str:
        return name.lower() if self._fold else name

    def take(self, text: str) -> str:
        """The name for `text`: its target form, with a suffix if another text has it."""
        name = self._form(text)[:self._limit]
        if self._taken.get(self._key(name), text) != text:
            tail = self._sep + _digest(text)
            name = self._form(name[:self._limit - len(tail)] + tail)
        n = 2
        while self._taken.get(self._key(name), text) != text:  # a hash collision: count on
            tail = f"{self._sep}{_digest(text)}{n}"
            name = self._form(name[:self._limit - len(tail)] + tail)
            n += 1
        self._taken[self._key(name)] = text
        return name


def rfc1035(text: str) -> str:
    """A GCP resource name: [a-z]([-a-z0-9]{0,61}[a-z0-9])?, 'og-' in front."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = name if name.startswith("og-") else "og-" + name
    return name[:63].rstrip("-")


def azure_name(text: str) -> str:
    """An Azure child-resource name: 1-80 of [A-Za-z0-9_.-], starting alphanumeric, ending in
    a word character."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]
    if not name[:1].isalnum():
        name = "og" + name
    return name[:79] + "_" if not name[-1:].isalnum() and name[-1:] != "_" else name[:80]


def tf_name(text: str) -> str:
    """A Terraform resource label: starts with a letter or '_', then [A-Za-z0-9_-]."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    return name if name[:1].isalpha() or name[:1] == "_" else "r_" + name
