"""The fleet API against a real PostgreSQL and two `fleet serve` replicas: enrolment,
credentials, a host confined to its own rows and policy, bounded and validated requests that
change nothing when refused, exactly-once rows under resending."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from outguard.fleet import ops
from tests.fleet.conftest import Replicas
from tests.fleet.hosts import SimHost, incident, rows, token

POLICY = "version: 1\nmode: enforce\nallow:\n  - name: web\n    to: [203.0.113.10]\n" \
         "    ports: [443]\n    proto: tcp\n"


def _counts(dsn: str) -> tuple[int, ...]:
    return tuple(rows(dsn, f"SELECT count(*) FROM {t}")[0][0]
                 for t in ("hosts", "incidents", "flows", "policy_versions", "rollouts"))


def test_enrol_then_rows_are_exactly_once_across_replicas(replicas: Replicas) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")
    items = [incident(1), incident(2)]
    first = a.incidents(items, ids=["k1", "k2"])
    assert first.status_code == 200 and first.json() == {"accepted": 2, "duplicates": 0}
    # the answer was lost, the agent sends again — through the other replica
    b = httpx.post(replicas.urls[1] + "/v1/incidents",
                   headers={"Authorization": f"Bearer {a.credential}"},
                   json={"incidents": [{"id": "k1", "ts": 0, "record": items[0]}]})
    again = a.incidents(items + [incident(3)], ids=["k1", "k2", "k3"])
    assert again.json() == {"accepted": 1, "duplicates": 2}
    assert b.status_code == 200
    got = rows(replicas.dsn, "SELECT host_id, id FROM incidents ORDER BY id")
    # the resend with another ts (0: far past) lands in another day's partition: the key is
    # (host, id, day), as FLEET-API.md says — same ts, same row
    assert [r[1] for r in got if r[1] != "k1"] == ["k2", "k3"]
    assert all(r[0] == a.host_id for r in got)


def test_a_host_sees_only_its_own_and_cannot_act_as_operator(replicas: Replicas,
                                                            tmp_path) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")
    b = SimHost(replicas.urls[1], replicas.dsn, "web-2")
    (tmp_path / "p.yaml").write_text(POLICY)
    with ops.connect(replicas.dsn) as conn:
        ops.push(conn, tmp_path / "p.yaml", "web-1", 1, [100], 5, 0)
    assert a.policy().status_code == 200
    assert b.policy().status_code == 204  # b's credential gets b's (none), never a's
    # a body naming another host changes nothing: host_id comes from the credential
    b.incidents([incident(9)], ids=["from-b"])
    assert rows(replicas.dsn, "SELECT host_id FROM incidents") == [(b.host_id,)]
    # there is no endpoint for reading incidents, pushing or enrolling others with a credential
    for method, path in (("GET", "/v1/incidents"), ("POST", "/v1/push"),
                         ("POST", "/v1/policy"), ("GET", "/v1/hosts")):
        got = b.http.request(method, path, json={})
        assert got.status_code in (404, 405) and "error" in got.json(), (path, got.text)


def test_credentials_revocation_and_token_replay(replicas: Replicas) -> None:
    url = replicas.urls[0]
    a = SimHost(url, replicas.dsn, "db-1")
    tok = token(replicas.dsn)
    ok = httpx.post(url + "/v1/enroll", json={"token": tok, "host": "db-2",
                                              "agent_version": "t"})
    assert ok.status_code == 201
    before = _counts(replicas.dsn)
    replay = httpx.post(replicas.urls[1] + "/v1/enroll",
                        json={"token": tok, "host": "db-3", "agent_version": "t"})
    assert replay.status_code == 409 and replay.json() == {"error": "enrol token already used"}
    unknown = httpx.post(url + "/v1/enroll", json={"token": "nope", "host": "x",
                                                   "agent_version": "t"})
    assert unknown.status_code == 401
    bound = token(replicas.dsn, "db-9")
    other = httpx.post(url + "/v1/enroll", json={"token": bound, "host": "db-8",
                                                 "agent_version": "t"})
    assert other.status_code == 403 and "db-9" in other.json()["error"]
    assert httpx.get(url + "/v1/policy").status_code == 401
    assert httpx.get(url + "/v1/policy", headers={"Authorization": "Bearer forged"}
                     ).status_code == 401
    assert _counts(replicas.dsn) == before
    assert a.policy().status_code == 204
    with ops.connect(replicas.dsn) as conn:
        ops.revoke(conn, "db-1")
    for u in replicas.urls:
        got = httpx.get(u + "/v1/policy", headers={"Authorization": f"Bearer {a.credential}"})
        assert got.status_code == 403 and "revoked" in got.json()["error"]
    assert a.incidents([incident(1)]).status_code == 403
    assert _counts(replicas.dsn) == before


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"incidents": [{"id": "a", "ts": "yesterday", "record": {}}]}', 422, "incidents.0.ts"),
    (b'{"incidents": [{"id": 5, "ts": 1.0, "record": {}}]}', 422, "incidents.0.id"),
    (b'{"incidents": [], "host_id": 7}', 422, "host_id"),
    (b'{"incidents": [{"id": "", "ts": 1.0, "record": {}}]}', 422, "incidents.0.id"),
    (b'{"incidents": "many"}', 422, "incidents"),
    (b'{"incidents": [' + b",".join([b'{"id": "x", "ts": 1, "record": {}}'] * 1001) + b"]}",
     422, "incidents"),
    (b'{"incidents": [{"id": "a", "ts": 1.0, "record": {"x": "' + b"a" * (1 << 20) + b'"}}]}',
     413, "larger than"),
    (b'{"incidents": [{"id": "a", "ts": 1.0, "record": {"x": "\\u0000"}}]}', 422, "refuses"),
])
def test_bad_requests_are_refused_naming_what_and_change_nothing(
        replicas: Replicas, body: bytes, status: int, words: str) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")
    before = _counts(replicas.dsn)
    got = a.http.post("/v1/incidents", content=body,
                      headers={"Content-Type": "application/json"})
    assert got.status_code == status, got.text
    assert words in got.json()["error"]
    assert _counts(replicas.dsn) == before


def test_report_validation_and_wait_bounds(replicas: Replicas) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")
    bad = a.http.post("/v1/report", json={"version": 1, "rollout_id": None, "result": "fine",
                                          "detail": "", "mode": None, "agent_version": "t",
                                          "lockdown_until": None, "blocked_rate": 0})
    assert bad.status_code == 422 and "result" in bad.json()["error"]
    assert a.policy(wait=61).status_code == 400
    assert a.http.get("/v1/policy", params={"wait": "soon"}).status_code == 400
    a.report(None, None, "running", blocked_rate=1.5)
    with ops.connect(replicas.dsn) as conn:
        (row,) = ops.hosts(conn)
    assert row["host"] == "web-1" and row["mode"] == "enforce" and row["last_seen"]
    assert row["blocked_rate"] == 1.5


def test_https_with_the_given_certificate(db: str, tmp_path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=fleet.test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    servers = Replicas(db, count=1, tls=(str(cert), str(key)))
    try:
        url = servers.urls[0]
        assert url.startswith("https://")
        with pytest.raises(httpx.ConnectError):  # not the system's trust: refused
            httpx.get(url + "/v1/policy")
        tok = token(db)
        got = httpx.post(url + "/v1/enroll", verify=ssl.create_default_context(cafile=cert),
                         json={"token": tok, "host": "web-1", "agent_version": "t"})
        assert got.status_code == 201
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP to the TLS port
            httpx.get(url.replace("https", "http") + "/v1/policy")
    finally:
        servers.stop()


def test_flows_are_stored_once_per_host_and_id(replicas: Replicas) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")
    flow = {"exe": "/usr/bin/curl", "dst": "203.0.113.5", "port": 443, "proto": "tcp",
            "count": 3, "names": ["api.example"]}
    body = {"flows": [{"id": "f1", "ts": 1_800_000_000.0, "record": flow},
                      {"id": "f1", "ts": 1_800_000_000.0, "record": flow}]}
    got = a.http.post("/v1/flows", json=body)
    assert got.status_code == 200 and got.json() == {"accepted": 1, "duplicates": 1}
    assert a.http.post("/v1/flows", json=body).json() == {"accepted": 0, "duplicates": 2}
    (row,) = rows(replicas.dsn, "SELECT host_id, id, record FROM flows")
    assert row == (a.host_id, "f1", flow)
    late = a.http.post("/v1/flows", json={"flows": [{"id": "f2", "ts": 5e9, "record": {}}]})
    assert late.status_code == 422 and "flows.0.ts" in late.json()["error"]


def test_the_rate_per_host_is_bounded_with_retry_after(db: str) -> None:
    servers = Replicas(db, count=1, rate=1)  # burst 3, then 1/s
    try:
        a = SimHost(servers.urls[0], db, "web-1")
        codes = [a.policy().status_code for _ in range(6)]
        assert codes[:3] == [204, 204, 204] and 429 in codes[3:], codes
        refused = a.policy()
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many requests" in refused.json()["error"]
        b = SimHost(servers.urls[0], db, "web-2")  # another host has its own bucket
        assert b.policy().status_code == 204
    finally:
        servers.stop()


def test_a_database_outage_is_503_with_retry_after() -> None:
    from outguard.fleet import schema
    from tests.fleet.pgserver import PgServer

    with PgServer() as pg:  # its own cluster: this test stops it
        dsn = pg.create_db()
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.migrate(conn)
        servers = Replicas(dsn, count=1)
        try:
            a = SimHost(servers.urls[0], dsn, "web-1")
            assert httpx.get(servers.urls[0] + "/healthz").json() == {"ok": True}
            pg.halt()
            assert httpx.get(servers.urls[0] + "/healthz", timeout=15).status_code == 503
            got = a.incidents([incident(1)])
            assert got.status_code == 503, got.text
            assert got.headers["retry-after"] == "5" and "database" in got.json()["error"]
        finally:
            servers.stop()


def test_an_expired_enrol_token_is_refused(replicas: Replicas) -> None:
    tok = token(replicas.dsn)
    with psycopg.connect(replicas.dsn, autocommit=True) as conn:
        conn.execute("UPDATE enroll_tokens SET expires = now() - interval '1 second'")
    got = httpx.post(replicas.urls[0] + "/v1/enroll",
                     json={"token": tok, "host": "web-1", "agent_version": "t"})
    assert got.status_code == 401 and "expired" in got.json()["error"]
    assert rows(replicas.dsn, "SELECT count(*) FROM hosts") == [(0,)]


def test_one_name_enrolled_at_once_with_two_tokens_gets_one_host(replicas: Replicas) -> None:
    import threading

    tokens = [token(replicas.dsn) for _ in range(6)]
    codes: list[int] = []
    go = threading.Barrier(len(tokens))

    def enrol(tok: str, url: str) -> None:
        go.wait()
        codes.append(httpx.post(url + "/v1/enroll", json={"token": tok, "host": "twin",
                                                          "agent_version": "t"}).status_code)

    threads = [threading.Thread(target=enrol, args=(t, replicas.urls[i % 2]))
               for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 409, 409, 409, 409, 409]
    assert rows(replicas.dsn, "SELECT count(*) FROM hosts") == [(1,)]
    assert rows(replicas.dsn, "SELECT count(*) FROM enroll_tokens WHERE used IS NOT NULL") == [(1,)]


def test_an_incident_sent_again_as_it_grows_keeps_its_newest_form(replicas: Replicas) -> None:
    a = SimHost(replicas.urls[0], replicas.dsn, "web-1")

    def send(count: int, last_seen: str) -> dict:
        rec = incident(1, count=count) | {"last_seen": last_seen}
        got = a.http.post("/v1/incidents", json={"incidents": [
            {"id": "inc1", "ts": 1_800_000_000.0, "record": rec}]})
        assert got.status_code == 200, got.text
        return got.json()

    assert send(1, "2026-12-03T10:00:00+00:00") == {"accepted": 1, "duplicates": 0}
    assert send(1, "2026-12-03T10:00:00+00:00") == {"accepted": 0, "duplicates": 1}  # resend
    assert send(5, "2026-12-03T10:05:00+00:00") == {"accepted": 1, "duplicates": 0}  # it grew
    assert send(3, "2026-12-03T10:02:00+00:00") == {"accepted": 0, "duplicates": 1}  # late, older
    assert rows(replicas.dsn, "SELECT id, record->'count' FROM incidents") == [("inc1", 5)]
    twice = a.http.post("/v1/incidents", json={"incidents": [
        {"id": "inc2", "ts": 1_800_000_000.0,
         "record": incident(2, count=2) | {"last_seen": "2026-12-03T11:00:00+00:00"}},
        {"id": "inc2", "ts": 1_800_000_000.0, "record": incident(2, count=1)}]})
    assert twice.json() == {"accepted": 1, "duplicates": 1}  # one row: the batch's newest
    assert rows(replicas.dsn, "SELECT record->'count' FROM incidents WHERE id = 'inc2'") == [(2,)]
