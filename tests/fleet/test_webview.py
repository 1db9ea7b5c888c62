"""The fleet view (`outguard fleet web`) over a real PostgreSQL: the token on every page, the
hosts, incidents and rollouts pages, escaping of what a host sent (a cmdline, an agent version,
a halt reason holding <script>), the incident filters, keyset pages that neither skip nor repeat
a row across days, and day partitions pruned by the page query."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from outguard.fleet import ops, schema
from outguard.fleet.webview import build
from outguard.web.auth import CSP, Secrets, load_token_file
from tests.fleet.hosts import incident

XSS = "<script>alert(1)</script>"
V1 = "version: 1\nmode: enforce\nallow:\n  - name: web\n    to: [203.0.113.10]\n" \
     "    ports: [443]\n    proto: tcp\n"


def _host(conn: psycopg.Connection, name: str, **cols: object) -> int:
    row = conn.execute("INSERT INTO hosts (name, credential_sha256) VALUES (%s, %s) RETURNING id",
                       (name, "x" + name)).fetchone()
    assert row is not None
    for col, value in cols.items():
        conn.execute(f"UPDATE hosts SET {col} = %s WHERE id = %s", (value, row[0]))
    return int(row[0])


def _incident(conn: psycopg.Connection, host_id: int, ts: datetime, record: dict) -> None:
    schema.ensure_partitions(conn, [ts.date()])
    conn.execute("INSERT INTO incidents (host_id, id, day, ts, record) VALUES (%s, %s, %s, %s,"
                 " %s)", (host_id, record["id"], ts.date(), ts, json.dumps(record)))


@pytest.fixture
def fleet(db: str, tmp_path: Path) -> tuple[TestClient, str, str]:
    """A fleet of two hosts (one with hostile strings), incidents over three days, a rollout."""
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        a = _host(conn, "web-01", agent_version=f"1.0{XSS}", mode="enforce",
                  applied_version=None, last_result="applied", last_seen=now)
        b = _host(conn, "db-01", last_result=f"verify_failed{XSS}")
        for n in range(7):
            record = incident(n, rule="deny:tor" if n % 2 else "default",
                              severity="high" if n == 3 else "low")
            record["process"]["cmdline"] = ["curl", XSS]
            _incident(conn, a if n < 5 else b, now - timedelta(hours=9 * n), record)
    path = tmp_path / "view" / "token"
    token = load_token_file(path)
    app = build(db, Secrets(token), f"the token is in {path}", page_size=3)
    return TestClient(app, base_url="http://127.0.0.1:8766"), token, db


def test_token_file_is_private_and_every_page_needs_it(fleet, tmp_path: Path) -> None:
    client, token, _db = fleet
    assert (tmp_path / "view" / "token").stat().st_mode & 0o777 == 0o600
    for page in ("/", "/incidents", "/rollouts"):
        refused = client.get(page)
        assert refused.status_code == 401 and "view/token" in refused.text, refused.text
        assert client.get(page, headers={"Authorization": "Bearer nope"}).status_code == 401
        got = client.get(page, headers={"Accept": "text/html"}, follow_redirects=False)
        assert got.status_code == 303 and got.headers["location"] == "/login"
    login = client.get("/login")
    assert login.status_code == 200 and "view/token" in login.text
    assert client.post("/login", data={"token": "nope"}).status_code == 401
    got = client.post("/login", data={"token": token}, follow_redirects=False)
    assert got.status_code == 303 and "HttpOnly" in got.headers["set-cookie"]
    page = client.get("/")  # the session cookie now
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP


def _get(client: TestClient, token: str, url: str) -> str:
    got = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    assert "<script>alert" not in got.text  # whatever a host sent is text
    assert "<script" not in got.text.replace('<script src="/static/app.js" defer></script>', "")
    return got.text


def test_hosts_page_shows_each_host_escaped(fleet) -> None:
    client, token, _db = fleet
    text = _get(client, token, "/")
    assert "web-01" in text and "db-01" in text and "enforce" in text
    assert "1.0&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "verify_failed&lt;script&gt;" in text


def _ids(text: str) -> list[str]:
    return re.findall(r"<td>[^<]*</td><td>(?:web|db)-01</td>", text)


def _pages(client: TestClient, token: str, url: str) -> list[str]:
    """Every row's (ts, host) cell pair, following `Older` to the end."""
    rows: list[str] = []
    while True:
        text = _get(client, token, url)
        rows += _ids(text)
        nxt = re.search(r'id="next" href="([^"]+)"', text)
        if nxt is None:
            return rows
        url = nxt.group(1).replace("&amp;", "&")


def test_incidents_newest_first_by_keyset_pages(fleet) -> None:
    client, token, _db = fleet
    text = _get(client, token, "/incidents?window=7d")
    assert "curl &lt;script&gt;alert(1)&lt;/script&gt;" in text
    rows = _pages(client, token, "/incidents?window=7d")
    assert len(rows) == 7 == len(set(rows))  # 3 + 3 + 1: none skipped, none twice
    stamps = [re.match(r"<td>([^<]*)</td>", r).group(1) for r in rows]  # type: ignore[union-attr]
    assert stamps == sorted(stamps, reverse=True)
    # the window: 24h holds the incidents of 0, 9 and 18 hours ago
    assert len(_pages(client, token, "/incidents?window=24h")) == 3


def test_incident_filters(fleet) -> None:
    client, token, _db = fleet
    assert len(_pages(client, token, "/incidents?window=7d&host=db-*")) == 2
    assert len(_pages(client, token, "/incidents?window=7d&rule=tor")) == 3  # n = 1, 3, 5
    high = _pages(client, token, "/incidents?window=7d&severity=high")
    assert len(high) == 1
    bad = client.get("/incidents?before=garbage", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and "not a page cursor" in bad.text


def test_a_deep_page_reads_only_the_partitions_it_needs(fleet) -> None:
    _client, _token, db = fleet
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        days = [now.date() - timedelta(days=d) for d in range(20)]
        schema.ensure_partitions(conn, days)
        before = ops.PageCursor(now - timedelta(days=10), 1, "x")
        params = ops.page_params(now - timedelta(days=12), before, None, None, None, 10)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + ops.PAGE_SQL, params))
    scanned = set(re.findall(r"incidents_(\d{8})", plan))
    wanted = {(now.date() - timedelta(days=d)).strftime("%Y%m%d") for d in range(9, 14)}
    assert scanned and scanned <= wanted, (scanned, plan)


def test_rollouts_page_shows_state_wave_and_why_halted(fleet, tmp_path: Path) -> None:
    client, token, db = fleet
    policy = tmp_path / "p.yaml"
    policy.write_text(V1)
    with ops.connect(db) as conn:
        pushed = ops.push(conn, policy, "*-01", 0, [50.0, 100.0], 5.0, 0.0)
        conn.execute("UPDATE rollouts SET state = 'halted', reason = %s WHERE id = %s",
                     (f"host web-01 reported apply_failed: {XSS}", pushed.rollout_id))
    text = _get(client, token, "/rollouts")
    assert "halted" in text and "1 (waves 0 to 1)" in text and "*-01" in text
    assert "apply_failed: &lt;script&gt;" in text


def test_no_database_is_said_on_the_page(tmp_path: Path) -> None:
    keys = Secrets("t")
    client = TestClient(build("postgresql:///nothing?host=/nonexistent", keys, "hint"))
    got = client.get("/", headers={"Authorization": "Bearer t"})
    assert got.status_code == 503 and "cannot connect to the fleet database" in got.text


def test_the_command_serves_the_view_with_its_token_file(db: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.fleet.pgserver import DIE_WITH_PARENT, _free_port

    refused = subprocess.run(
        [sys.executable, "-m", "outguard", "fleet", "web", "--db", db, "--listen",
         "198.51.100.1:8766", "--token-file", str(tmp_path / "t")],
        check=False, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "not a loopback address" in refused.stderr
    port = _free_port()
    path = tmp_path / "dir" / "token"
    proc = subprocess.Popen(
        [*DIE_WITH_PARENT, sys.executable, "-m", "outguard", "fleet", "web", "--db", db,
         "--listen", f"127.0.0.1:{port}", "--token-file", str(path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "fleet web exited"
            try:
                got = httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert got.status_code == 401
        token = path.read_text().strip()
        got = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert got.status_code == 200 and "No host has enrolled yet." in got.text
    finally:
        proc.terminate()
        proc.wait(10)
