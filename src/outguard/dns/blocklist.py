"""Domain blocklists of the `dns:` section: files of names answered NXDOMAIN, with every name
below them.

Place in the data flow: `dns.blocklists` (policy) → **here** (read and parsed, hosts-file or one
name a line) → `ruleset.names.NamePolicy.of` → the resolver's lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from outguard.errors import OutguardError
from outguard.ruleset.names import normalize

_HOSTS_SINKS = frozenset({"0.0.0.0", "127.0.0.1", "::", "::1", "::0", "0:0:0:0:0:0:0:0"})


class BlocklistError(OutguardError):
    """A domain blocklist file that cannot be read."""


def parse_blocklist(text: str) -> Iterator[str]:
    """Names of a hosts-file (`0.0.0.0 name [name...]`) or plain (`name` per line) blocklist.

    Lines that are neither (comments, `localhost`, addresses alone) are skipped: feeds are
    messy and one odd line must not disable a whole list."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if fields[0] in _HOSTS_SINKS or (len(fields) > 1 and ":" in fields[0]) \
                or (len(fields) > 1 and fields[0].replace(".", "").isdigit()):
            fields = fields[1:]
        for word in fields:
            name = normalize(word.removeprefix("*.").removeprefix("||").removesuffix("^"))
            if "." in name and name not in ("localhost", "localhost.localdomain") \
                    and not name.replace(".", "").isdigit() and ":" not in name:
                yield name


def load_blocklists(paths: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            raise BlocklistError(f"cannot read DNS blocklist {path}: {exc.strerror}") from exc
        for name in parse_blocklist(text):
            out.setdefault(name, path)
    return out
