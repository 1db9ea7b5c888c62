"""Which names may fold into a wildcard: the Public Suffix List, offline.

`suggest` folds many names below one registrable domain (`a.example.com`, `b.example.com`, ...)
into `*.example.com`. A wildcard is only safe when one party controls every name below it, which
is what the Public Suffix List says: `co.uk` or `s3.amazonaws.com` are public suffixes (anyone
registers below them), so `*.co.uk` would allow half of Britain and `*.amazonaws.com` every S3
bucket of every AWS customer. A domain is therefore foldable only when it is a registrable domain
(`publicsuffixlist.privatesuffix`) **and** no rule of the list lies below it (`amazonaws.com`
is registrable, but `s3.amazonaws.com` below it is a public suffix).

The list is the snapshot bundled with the `publicsuffixlist` package (both its ICANN and private
sections); nothing is fetched at run time, so the same flows give the same policy offline.
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PSLFILE, PublicSuffixList


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # reads the bundled PSLFILE; no network


@cache
def _parents_of_suffixes() -> frozenset[str]:
    """Every domain with a public-suffix rule strictly below it (`amazonaws.com`, `com`)."""
    out: set[str] = set()
    with open(PSLFILE, encoding="utf-8") as lines:
        for line in lines:
            rule = line.strip()
            if not rule or rule.startswith("//"):
                continue
            rule = rule.split()[0].lstrip("!").removeprefix("*.")
            try:
                rule = rule.encode("idna").decode("ascii").lower() if not rule.isascii() \
                    else rule.lower()
            except UnicodeError:
                continue
            labels = rule.split(".")
            out.update(".".join(labels[i:]) for i in range(1, len(labels)))
    return frozenset(out)


def registrable(name: str) -> str | None:
    """The registrable domain of `name` (`api.example.co.uk` → `example.co.uk`); None when
    `name` is itself a public suffix (`co.uk`, `s3.amazonaws.com`, `localhost`)."""
    got = _psl().privatesuffix(name)
    return got if isinstance(got, str) else None


def wildcard_safe(domain: str) -> bool:
    """Whether `*.domain` names only names one party controls: `domain` is registrable (not
    a public suffix) and no public suffix lies below it."""
    return registrable(domain) == domain and domain not in _parents_of_suffixes()
