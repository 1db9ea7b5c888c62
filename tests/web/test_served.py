"""The dashboard served by the agent itself (`AgentOptions.web`, what `outguard run --web`
sets): a real listener on loopback inside the agent's event loop, the token on the wire, the
live feed delivering an incident the agent made from a packet, and the refusals of where it
may listen. Packets come from a `MemorySource` (no kernel needed here; tests/web/test_browser.py
does the same with NFLOG in a namespace)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from outguard.errors import OutguardError
from outguard.events import Attribution, BlockedPacket
from outguard.monitor.agent import MemorySource
from outguard.policy.webconf import WebConfig
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.web.auth import TOKEN_FILE

XSS = "<script>alert(1)</script>"


class Procs:
    def attribute(self, pkt: BlockedPacket) -> Attribution:
        return Attribution(pid=4242, exe="/usr/bin/python3", cmdline=("python3", "-c", XSS),
                           user="app", uid=1000)


def packet(dst: str) -> BlockedPacket:
    return BlockedPacket(time=datetime.now(UTC), prefix="og:default", family=4, proto="tcp",
                         src="192.0.2.2", dst=dst, sport=40000, dport=443, uid=1000)


def test_the_agent_serves_the_dashboard_and_streams_new_incidents(tmp_path: Path) -> None:
    source = MemorySource()
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                        web=WebConfig(listen="127.0.0.1:0"))
    with AgentHandle(opts, source=source, attributor=Procs()) as agent:
        web = agent.running.web
        assert web is not None and web.url.startswith("http://127.0.0.1:")
        token = (tmp_path / TOKEN_FILE).read_text().strip()
        assert httpx.get(web.url).status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert httpx.get(web.url, headers=auth).status_code == 200
        got: list[str] = []
        with httpx.stream("GET", f"{web.url}api/stream?severity=info", headers=auth,
                          timeout=5) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            pushed = time.monotonic()
            agent.call_soon(lambda: source.push(packet("203.0.113.50")))
            for line in lines:
                if line.startswith("data: "):
                    got.append(line)
                    break
            took = time.monotonic() - pushed
        assert "203.0.113.50" in got[0] and took < 2.0, took
        # escaped in the page, kept as text in the JSON
        (inc,) = httpx.get(f"{web.url}api/incidents", headers=auth).json()["incidents"]
        assert inc["process"]["cmdline"] == ["python3", "-c", XSS]
        page = httpx.get(f"{web.url}incidents/{inc['id']}", headers=auth).text
        assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the listener is gone with the agent
    with pytest.raises(httpx.ConnectError):
        httpx.get(web.url, timeout=2)


def test_an_open_live_feed_does_not_hold_the_agent_back(tmp_path: Path) -> None:
    import threading

    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                        web=WebConfig(listen="127.0.0.1:0"))
    agent = AgentHandle(opts, source=MemorySource(), attributor=Procs()).start()
    web = agent.running.web
    assert web is not None
    token = (tmp_path / TOKEN_FILE).read_text().strip()
    opened = threading.Event()

    def watch() -> None:
        with httpx.stream("GET", f"{web.url}api/stream", timeout=30,
                          headers={"authorization": f"Bearer {token}"}) as stream:
            for _line in stream.iter_lines():
                opened.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert opened.wait(5)
    start = time.monotonic()
    agent.stop()
    assert time.monotonic() - start < 1.5
    reader.join(5)
    assert not reader.is_alive()  # the stream ended with the agent


def test_keep_alive_answers_do_not_wait_for_delayed_acks(tmp_path: Path) -> None:
    """Trial run (bench/web.py): every keep-alive answer took ~45 ms, whatever it was, because
    the listener was made without IPPROTO_TCP and asyncio then leaves Nagle on."""
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                        web=WebConfig(listen="127.0.0.1:0"))
    with AgentHandle(opts, source=MemorySource(), attributor=Procs()) as agent:
        web = agent.running.web
        assert web is not None
        with httpx.Client(base_url=web.url) as client:
            client.get("login")
            took = []
            for _ in range(10):
                start = time.monotonic()
                assert client.get("login").status_code == 200
                took.append(time.monotonic() - start)
    assert sorted(took)[5] < 0.03, took


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "192.0.2.1:8765", "[2001:db8::1]:8765",
                                    "[::]:8765", "example.org:8765"])
def test_no_remote_listener_without_tls(listen: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address, without TLS"):
        WebConfig(listen=listen)


def test_loopback_and_tls_pairs() -> None:
    assert WebConfig().listen == "127.0.0.1:8765"
    for listen in ("127.0.0.1:8765", "[::1]:0", "localhost:8765", "127.9.9.9:1"):
        WebConfig(listen=listen)
    WebConfig(listen="192.0.2.1:443", tls_cert=Path("c.pem"), tls_key=Path("k.pem"))
    with pytest.raises(ValueError, match="both"):
        WebConfig(listen="127.0.0.1:8765", tls_cert=Path("c.pem"))
    for bad in ("8765", "127.0.0.1:", "127.0.0.1:65536", ":80"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            WebConfig(listen=bad)


def test_a_taken_port_fails_the_start(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                            web=WebConfig(listen=f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(OutguardError, match="cannot listen"):
            AgentHandle(opts, source=MemorySource(), attributor=Procs()).start()
    finally:
        taken.close()


def _self_signed(where: Path) -> tuple[Path, Path]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (./dev setup)")
    cert, key = where / "web.crt", where / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls_serves_https_and_a_secure_cookie(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    opts = AgentOptions(policy=None, state_dir=tmp_path / "state", apply=False, alerts=[],
                        web=WebConfig(listen="127.0.0.1:0", tls_cert=cert, tls_key=key))
    with AgentHandle(opts, source=MemorySource(), attributor=Procs()) as agent:
        web = agent.running.web
        assert web is not None and web.url.startswith("https://")
        token = (tmp_path / "state" / TOKEN_FILE).read_text().strip()
        with httpx.Client(base_url=web.url, verify=str(cert)) as client:
            got = client.post("login", data={"token": token}, follow_redirects=False)
            assert got.status_code == 303 and "; Secure" in got.headers["set-cookie"]
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP gets no answer
            httpx.get(web.url.replace("https://", "http://"), timeout=5)


def test_a_bad_tls_pair_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                        web=WebConfig(listen="127.0.0.1:0", tls_cert=tmp_path / "c.pem",
                                          tls_key=tmp_path / "k.pem"))
    with pytest.raises(OutguardError, match="TLS certificate"):
        AgentHandle(opts, source=MemorySource(), attributor=Procs()).start()


def test_run_refuses_a_remote_dashboard_without_tls_before_anything() -> None:
    from click.testing import CliRunner

    from outguard.cli.main import cli

    got = CliRunner().invoke(cli, ["run", "--no-apply", "--web", "0.0.0.0:8765"])
    assert got.exit_code == 2 and "not a loopback address" in got.output
    got = CliRunner().invoke(cli, ["run", "--no-apply", "--web-tls-cert", "c.pem"])
    assert got.exit_code == 2 and "need --web" in got.output


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_policy_web_section_starts_the_dashboard(tmp_path: Path) -> None:
    port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'version: 1\nweb:\n  listen: "127.0.0.1:{port}"\n')
    # --no-apply with nothing applied: the agent serves this file (what the shipped unit does
    # with the applied policy)
    opts = AgentOptions(policy=policy, state_dir=tmp_path / "state", apply=False, alerts=[],
                        dns=False, feeds=False)
    with AgentHandle(opts, source=MemorySource(), attributor=Procs()) as agent:
        web = agent.running.web
        assert web is not None and web.url == f"http://127.0.0.1:{port}/"
        assert httpx.get(web.url).status_code == 401


def test_check_refuses_a_remote_web_section_without_tls(tmp_path: Path) -> None:
    from outguard.errors import PolicyError
    from outguard.pipeline import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text('version: 1\nweb:\n  listen: "0.0.0.0:8765"\n')
    with pytest.raises(PolicyError, match="not a loopback address"):
        load_policy(policy)
