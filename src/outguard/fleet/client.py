"""The agent's HTTP side of the fleet API: enrolment, the host's credential, policy fetch, report
and batch posts, with the bodies of `fleet.wire` (the contract both sides share).

Place in the data flow: `fleet.agent` (policy follow) and `fleet.sender` (the outbox) call it;
it calls the fleet server over httpx, HTTP/1.1 only, TLS verified against the system's CAs or
the `--fleet-ca` file. The credential is the host's identity: enrolment (a one-time token)
returns it once, and it is kept in STATE_DIR/fleet/credential.json, mode 0600, written
atomically (`state.write_private`); later starts use it and never enrol again.

Failures are typed for the callers' retry logic: `UnreachableError` (no connection, a timeout, a
5xx: try again later, with backoff), `ThrottledError` (429, with the server's Retry-After), and
`RefusedError` (any other 4xx: this request itself is wrong, or the credential is).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from outguard import __version__
from outguard.errors import OutguardError
from outguard.fleet import wire
from outguard.state import write_private

M = TypeVar("M", bound=BaseModel)
CREDENTIAL = Path("fleet") / "credential.json"
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 15.0


class FleetError(OutguardError):
    """The fleet server could not be used as asked."""


class UnreachableError(FleetError):
    """No answer, or a server error (5xx): the request may be tried again later."""


class ThrottledError(FleetError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RefusedError(FleetError):
    """A 4xx other than 429: the server understood and refuses (the body, or the credential)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credential:
    url: str  # the server it was issued by
    host: str
    host_id: int
    credential: str


def credential_path(state_dir: Path) -> Path:
    return state_dir / CREDENTIAL


def load_credential(state_dir: Path) -> Credential | None:
    """The stored credential, or None when the host has not enrolled. FleetError when the file
    exists but is not one (never silently enrol again over a damaged identity)."""
    path = credential_path(state_dir)
    try:
        doc = json.loads(path.read_text())
        return Credential(str(doc["url"]), str(doc["host"]), int(doc["host_id"]),
                          str(doc["credential"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"{path}: not a fleet credential ({exc}); remove it and enrol"
                         " again with a new token") from exc


def save_credential(state_dir: Path, cred: Credential) -> Path:
    """0600, atomically (a crash leaves the old file or the new one, never half of one)."""
    path = credential_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps(asdict(cred), indent=1))
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself, durable
    finally:
        os.close(dir_fd)
    return path


def default_host(netns: str | None = None) -> str:
    """The name a host enrols with: the hostname (with the namespace's name, for agents that
    share one kernel's hostname), cut to what the API accepts."""
    name = socket.gethostname() + (f"-{netns}" if netns else "")
    name = "".join(c if c.isalnum() or c in ".-" else "-" for c in name)[:253]
    return name or "host"


def tls(ca: Path | None) -> ssl.SSLContext | bool:
    """How the server's certificate is verified: against `ca` only, or the system's CAs."""
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise FleetError(f"--fleet-ca {ca}: {exc}") from exc


def make_http(url: str, ca: Path | None, credential: str | None = None) -> httpx.AsyncClient:
    headers = {"User-Agent": f"outguard/{__version__}"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return httpx.AsyncClient(base_url=url.rstrip("/") + wire.API_PREFIX, http1=True, http2=False,
                             verify=tls(ca), headers=headers, follow_redirects=False,
                             timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT))


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason_phrase


def _retry_after(resp: httpx.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


async def _send(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    what = f"{method} {http.base_url}{path.lstrip('/')}"
    try:
        resp = await http.request(method, path, **kw)
    except httpx.HTTPError as exc:  # connect, read, timeout, protocol
        raise UnreachableError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code >= 500:
        raise UnreachableError(f"{what}: {resp.status_code} {_error_text(resp)}")
    if resp.status_code == 429:
        raise ThrottledError(f"{what}: 429 {_error_text(resp)}", _retry_after(resp))
    if resp.status_code >= 400:
        raise RefusedError(f"{what}: {resp.status_code} {_error_text(resp)}", resp.status_code)
    return resp


def _parse(model: type[M], resp: httpx.Response) -> M:
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        raise UnreachableError(f"the fleet server's answer is not a {model.__name__}: {exc}") from exc


async def enroll(url: str, ca: Path | None, token: str, host: str) -> Credential:
    """POST /v1/enroll: trade the one-time token for this host's credential."""
    body = wire.EnrollRequest(token=token, host=host, agent_version=__version__)
    async with make_http(url, ca) as http:
        resp = await _send(http, "POST", "enroll", content=body.model_dump_json(),
                           headers={"Content-Type": "application/json"})
    got = _parse(wire.EnrollResponse, resp)
    return Credential(url, host, got.host_id, got.credential)


@dataclass(frozen=True)
class PolicyAnswer:
    status: int  # 200 (a policy), 304 (unchanged), 204 (none assigned)
    policy: wire.PolicyResponse | None = None
    etag: str | None = None


class FleetClient:
    """The requests of an enrolled host (its credential on every one)."""

    def __init__(self, url: str, ca: Path | None, cred: Credential) -> None:
        self.url, self.ca, self.cred = url, ca, cred
        self.http = make_http(url, ca, cred.credential)

    async def policy(self, etag: str | None, wait: float) -> PolicyAnswer:
        """GET /v1/policy, long-polling up to `wait` seconds for a change of `etag`."""
        wait = max(0.0, min(wait, wire.MAX_WAIT))
        headers = {"If-None-Match": etag} if etag else {}
        resp = await _send(self.http, "GET", "policy", params={"wait": f"{wait:g}"},
                           headers=headers,
                           timeout=httpx.Timeout(REQUEST_TIMEOUT + wait, connect=CONNECT_TIMEOUT))
        if resp.status_code in (204, 304):  # a 204's ETag ("none") is long-polled on too
            return PolicyAnswer(resp.status_code, etag=resp.headers.get("ETag")
                                or (etag if resp.status_code == 304 else None))
        got = _parse(wire.PolicyResponse, resp)
        return PolicyAnswer(200, got, resp.headers.get("ETag")
                            or wire.etag(got.version, got.lockdown_until))

    async def report(self, body: wire.ReportRequest) -> None:
        await _send(self.http, "POST", "report", content=body.model_dump_json(),
                    headers={"Content-Type": "application/json"})

    async def report_fresh(self, body: wire.ReportRequest) -> None:
        """The report on a new connection: the proof that the host still *connects* to the
        server (a kept-alive connection is established traffic, which any policy lets
        through: it would confirm a policy that blocks every new connection to the server)."""
        async with make_http(self.url, self.ca, self.cred.credential) as http:
            await _send(http, "POST", "report", content=body.model_dump_json(),
                        headers={"Content-Type": "application/json", "Connection": "close"})

    async def post_items(self, kind: str, items: list[wire.Item]) -> wire.BatchResponse:
        """POST /v1/incidents or /v1/flows."""
        batch: BaseModel = wire.IncidentBatch(incidents=items) if kind == "incidents" \
            else wire.FlowBatch(flows=items)
        resp = await _send(self.http, "POST", kind, content=batch.model_dump_json(),
                           headers={"Content-Type": "application/json"})
        return _parse(wire.BatchResponse, resp)

    async def close(self) -> None:
        await self.http.aclose()
