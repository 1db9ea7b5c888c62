"""The dashboard's application through ASGI (Starlette's TestClient): the token on every
request, the session cookie and its flags, CSRF on the logout, the security headers, the
overview, the incidents pages and API over a real SQLite store, and escaping of what a process
or a name can hold."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from outguard.events import Classification
from outguard.store.pages import Cursor
from outguard.web.auth import COOKIE, CSP, TOKEN_FILE, Secrets, load_token
from tests.web.fixtures import XSS, app_for, incident, store_with


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    store_with(d / "events.db", [
        incident(1),
        incident(2, process="/usr/bin/java", dst="198.51.100.7", dport=1389, rule="deny:ldap",
                 severity="critical", title="possible JNDI callback", signature="jndi-callback",
                 cmdline=("java", XSS), names=(f"evil{XSS}.example",),
                 classifications=[Classification("jndi-callback", "possible JNDI callback",
                                                 "critical")]),
        incident(3, severity="high", rule="deny:tor", process="/usr/bin/python3"),
    ])
    return d


def client(state: Path, **kw: object) -> tuple[TestClient, str]:
    app, keys = app_for(state, **kw)
    return TestClient(app, base_url="http://127.0.0.1:8765"), keys.token


def test_token_is_made_once_private_and_kept(tmp_path: Path) -> None:
    token = load_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 40 and load_token(tmp_path) == token


@pytest.mark.parametrize("path", ["/", "/incidents", "/api/incidents", "/api/stream",
                                  "/api/overview", "/top", "/feeds", "/dns", "/learned",
                                  "/incidents/inc-0000001", "/metrics"])
def test_every_route_refuses_without_the_token(state: Path, path: str) -> None:
    c, token = client(state)
    got = c.get(path)
    assert got.status_code == 401 and "token" in got.text
    assert c.get(path, headers={"authorization": "Bearer nope"}).status_code == 401
    assert c.get(path, headers={"authorization": f"Bearer {token}x"}).status_code == 401
    # a browser asking for a page is sent to the login form
    page = c.get(path, headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_login_sets_a_strict_httponly_session(state: Path) -> None:
    c, token = client(state)
    bad = c.post("/login", data={"token": "wrong"})
    assert bad.status_code == 401 and COOKIE not in c.cookies
    got = c.post("/login", data={"token": token}, follow_redirects=False)
    assert got.status_code == 303
    cookie = got.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    assert c.get("/").status_code == 200  # the cookie is the session now


def test_logout_needs_the_csrf_value(state: Path) -> None:
    c, token = client(state)
    c.post("/login", data={"token": token})
    assert c.post("/logout", data={}).status_code == 403
    assert c.post("/logout", data={"csrf": "x" * 64}).status_code == 403
    page = c.get("/").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    # a cross-origin form post is refused before any route sees it
    cross = c.post("/logout", data={"csrf": csrf}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    out = c.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


def test_security_headers_on_every_answer(state: Path) -> None:
    c, token = client(state)
    for got in (c.get("/", headers={"authorization": f"Bearer {token}"}), c.get("/login"),
                c.get("/api/incidents")):
        assert got.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["x-frame-options"] == "DENY"


def test_overview_shows_mode_counters_and_latest(state: Path) -> None:
    c, token = client(state, counters=lambda: {})
    page = c.get("/", headers={"authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert 'id="mode"' in page.text and "no policy applied" in page.text
    assert "/usr/bin/java" in page.text and 'id="pending">none' in page.text
    assert "<script>" not in page.text.replace('<script src="/static/app.js" defer></script>', "")


def test_values_are_escaped_everywhere(state: Path) -> None:
    c, token = client(state)
    auth = {"authorization": f"Bearer {token}"}
    for path in ("/", "/incidents", "/incidents/inc-0000002"):
        text = c.get(path, headers=auth).text
        assert XSS not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path


def test_incidents_api_filters_and_pages(state: Path) -> None:
    c, token = client(state)
    auth = {"authorization": f"Bearer {token}"}
    got = c.get("/api/incidents", headers=auth).json()
    assert [i["id"] for i in got["incidents"]] == ["inc-0000003", "inc-0000002", "inc-0000001"]
    assert got["next"] is None
    high = c.get("/api/incidents?severity=high", headers=auth).json()["incidents"]
    assert {i["id"] for i in high} == {"inc-0000002", "inc-0000003"}
    assert [i["id"] for i in c.get("/api/incidents?rule=deny:tor", headers=auth).json()[
        "incidents"]] == ["inc-0000003"]
    assert [i["id"] for i in c.get("/api/incidents?rule=ldap", headers=auth).json()[
        "incidents"]] == ["inc-0000002"]
    assert [i["id"] for i in c.get("/api/incidents?process=java", headers=auth).json()[
        "incidents"]] == ["inc-0000002"]
    page = c.get("/incidents", headers=auth).text
    assert [r for r in ("default", "deny:ldap", "deny:tor") if f'<option value="{r}"' in page] == [
        "default", "deny:ldap", "deny:tor"]
    first = c.get("/api/incidents?limit=2", headers=auth).json()
    assert len(first["incidents"]) == 2 and first["next"]
    rest = c.get(f"/api/incidents?limit=2&before={first['next']}", headers=auth).json()
    assert [i["id"] for i in rest["incidents"]] == ["inc-0000001"] and rest["next"] is None


def test_incident_detail_and_missing(state: Path) -> None:
    c, token = client(state)
    auth = {"authorization": f"Bearer {token}"}
    got = c.get("/api/incidents/inc-0000002", headers=auth).json()
    assert got["incident"]["process"]["cmdline"] == ["java", XSS]
    assert got["explain"] == ["no policy is in service: nothing to explain"]
    page = c.get("/incidents/inc-0000002", headers=auth).text
    assert "possible JNDI callback" in page and "jndi-callback" in page
    assert c.get("/api/incidents/nope", headers=auth).status_code == 404
    assert c.get("/incidents/nope", headers=auth).status_code == 404


def test_cursor_text_round_trips() -> None:
    cur = Cursor(1767614400.123456, 42)
    assert Cursor.parse(cur.text()) == cur
    with pytest.raises(ValueError):
        Cursor.parse("nonsense")


def test_metrics_need_the_token(state: Path) -> None:
    c, token = client(state, metrics=lambda: b"outguard_x 1\n")
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"authorization": f"Bearer {token}"}).text == "outguard_x 1\n"


def test_a_missing_store_is_said_not_crashed(tmp_path: Path) -> None:
    c, token = client(tmp_path / "empty")
    page = c.get("/incidents", headers={"authorization": f"Bearer {token}"})
    assert page.status_code == 200 and "no event store" in page.text
    api = c.get("/api/incidents", headers={"authorization": f"Bearer {token}"})
    assert api.status_code == 503


def test_explain_uses_the_policy_in_service_lowered_once(state: Path, tmp_path: Path) -> None:
    from outguard.pipeline import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\ndeny:\n  - name: ldap\n    to: [198.51.100.7]\n    ports: [1389]\n"
                    "allow:\n  - name: web\n    to: [203.0.113.9]\n    ports: [443]\n")
    policy = load_policy(path)
    c, token = client(state, policy=lambda: policy)
    auth = {"authorization": f"Bearer {token}"}
    got = c.get("/api/incidents/inc-0000002", headers=auth).json()["explain"]
    assert got[0].startswith("deny (drop) by deny:ldap: deny rule 'ldap' matches") and len(got) == 1
    # the policy allows now what the kernel's default rule blocked then: both are said
    changed = c.get("/api/incidents/inc-0000001", headers=auth).json()["explain"]
    assert changed[0].startswith("allow (accept) by allow:web") and "was default" in changed[1]
    sources = c.app.state.web.sources  # type: ignore[attr-defined]
    first = sources.ruleset()
    assert sources.ruleset() is first  # not lowered again for the same policy


def test_the_login_form_and_a_refusal_name_the_token_file_really_used(state: Path) -> None:
    # a trial under --netns: the form said /var/lib/outguard/web.token, the file was
    # /var/lib/outguard/netns/NAME/web.token
    from outguard.web.app import build
    from outguard.web.sources import Sources

    where = str(state / "netns" / "og-x" / TOKEN_FILE)
    keys = Secrets(load_token(state))
    app = build(Sources(state_dir=state, store_path=state / "events.db"), keys,
                token_path=where)
    c = TestClient(app, base_url="http://127.0.0.1:8765")
    assert f"sudo cat {where}" in c.get("/login").text
    assert where in c.post("/login", data={"token": "wrong"}).text
    assert where in c.get("/api/overview").text
