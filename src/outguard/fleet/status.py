"""The fleet agent's part of `outguard status`: the outbox's books and the policy it follows.

Place in the data flow: reads what the running (or stopped) agent keeps in STATE_DIR/fleet —
the outbox (`fleet.outbox.read_books`, read-only) and follow.json (`fleet.follow`) — and
nothing else; `cli.status_cmd` prints `lines` and puts `read` into `--json`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from outguard.fleet import follow as fl
from outguard.fleet.agent import FOLLOW, OUTBOX
from outguard.fleet.client import CREDENTIAL, FleetError, load_credential
from outguard.fleet.outbox import read_books


def read(state_dir: Path) -> dict[str, Any] | None:
    """None when this state directory has never been used with --fleet."""
    if not (state_dir / "fleet").is_dir():
        return None
    out: dict[str, Any] = {}
    try:
        cred = load_credential(state_dir)
        out["enrolled"] = None if cred is None else {"url": cred.url, "host": cred.host,
                                                     "host_id": cred.host_id}
    except FleetError as exc:
        out["enrolled"] = {"error": str(exc)}
    try:
        out["follow"] = dataclasses.asdict(fl.load((state_dir / FOLLOW).read_text()))
    except (OSError, ValueError, TypeError):
        out["follow"] = None
    books = read_books(state_dir / OUTBOX)
    out["outbox"] = None if books is None else {k: b.to_json() for k, b in books.items()}
    return out


def lines(doc: dict[str, Any] | None) -> list[str]:
    if doc is None:
        return []
    enrolled = doc.get("enrolled")
    out = ["fleet: " + (f"enrolled with {enrolled['url']} as {enrolled['host']} (host id"
                        f" {enrolled['host_id']})" if enrolled and "url" in enrolled
                        else enrolled["error"] if enrolled
                        else f"not enrolled (no {CREDENTIAL})")]
    f = doc.get("follow")
    if f:
        lock = f"; fleet lockdown until {f['lockdown_until']:.0f}" if f["lockdown_until"] else ""
        out.append(f"  policy version in force: {f['version'] if f['version'] is not None else 'none'};"
                   f" last tried {f['tried']}: {f['result']}"
                   f"{'' if f['reported'] else ' (not reported yet)'}{lock}")
    for kind, b in (doc.get("outbox") or {}).items():
        out.append(f"  outbox {kind}: {b['enqueued']} enqueued = {b['sent']} sent +"
                   f" {b['pending']} pending + {b['dropped']} dropped (full) + {b['rejected']}"
                   f" rejected" + ("" if b["balanced"] else "  <-- BOOKS DO NOT BALANCE")
                   + ("  <-- DROPPED" if b["dropped"] else ""))
    return out
