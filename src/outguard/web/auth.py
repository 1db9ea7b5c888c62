"""The dashboard's gate: the token, the session cookie, CSRF, and the security headers.

Place in the data flow: every request passes `Gate` (an ASGI middleware) before a route of
`outguard.web.app` sees it. The token is made at the first start as `STATE_DIR/web.token`
(0600, like the rest of the state directory): whoever can read it is as trusted as root's
`outguard status`. A request carries it as `Authorization: Bearer TOKEN`, or once through the
login form, which sets an HttpOnly, SameSite=Strict cookie holding a value derived from the
token (the token itself never sits in a browser). Every state-changing request (anything but
GET/HEAD) also needs the CSRF value (derived from the token too) in a form field or the
`X-CSRF-Token` header, and a same-origin `Origin` when the browser sends one. The dashboard's
`/metrics` needs the token too: the token-free endpoint is the agent's `--metrics-listen`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from outguard.state import write_private

TOKEN_FILE = "web.token"
COOKIE = "og_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD")

# script-src 'self': no inline script runs, whatever a cmdline or DNS name smuggles into a page
# same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` with a form POST,
# and the origin check would refuse the dashboard's own login form (tests/web/test_browser.py)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
       " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-store")]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def load_token(state_dir: Path) -> str:
    """The dashboard's token: read, or made (0600) when the file does not exist yet."""
    return load_token_file(state_dir / TOKEN_FILE)


def load_token_file(path: Path) -> str:
    """The token in `path`, made (0600, its directory 0700) when the file does not exist yet:
    the dashboard's, or the fleet view's (`outguard fleet web --token-file`)."""
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    os.chmod(path, 0o600)
    return token


class Secrets:
    """What is derived from the token: the session cookie's value and the CSRF value. Both
    change with the token (delete the file and restart: every session ends)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.session = self._derive("session")
        self.csrf = self._derive("csrf")

    def _derive(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def bearer_ok(self, header: str | None) -> bool:
        if header is None or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def cookie_ok(self, cookie_header: str | None) -> bool:
        if not cookie_header:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:  # a malformed Cookie header is no session
            return False
        got = jar.get(COOKIE)
        return got is not None and hmac.compare_digest(got.value.encode(), self.session.encode())

    def csrf_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.csrf.encode())

    def set_cookie(self, secure: bool) -> str:
        flags = "; Secure" if secure else ""
        return f"{COOKIE}={self.session}; Path=/; HttpOnly; SameSite=Strict{flags}"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS, *extra]})
    await send({"type": "http.response.body", "body": text.encode()})


class Gate:
    """The middleware: security headers on every answer, the token (or its session) on every
    request but the login form, the origin check on state-changing ones. The CSRF value is
    checked by the routes that change state (`csrf_ok`), where the form body is parsed."""

    def __init__(self, app: ASGIApp, keys: Secrets,
                 token_hint: str = "STATE_DIR/web.token") -> None:
        self.app, self.keys, self.token_hint = app, keys, token_hint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = _headers(scope)
        if scope["method"] not in SAFE_METHODS and not _same_origin(headers):
            await _plain(send, 403, "cross-origin request refused\n", [])
            return
        allowed = (path == "/login" or path.startswith("/static/")
                   or self.keys.bearer_ok(headers.get("authorization"))
                   or self.keys.cookie_ok(headers.get("cookie")))
        if not allowed:
            await self._refuse(scope, send, headers)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, secured)

    async def _refuse(self, scope: Scope, send: Send, headers: dict[str, str]) -> None:
        """A browser asking for a page goes to the login form; anything else gets a 401."""
        wants_page = scope["method"] == "GET" and "text/html" in headers.get("accept", "")
        if wants_page:
            await _plain(send, 303, "login first\n", [(b"location", b"/login")])
            return
        await _plain(send, 401, f"the dashboard needs its token ({self.token_hint})\n",
                     [(b"www-authenticate", b'Bearer realm="outguard"')])


def _same_origin(headers: dict[str, str]) -> bool:
    """Whether a state-changing request comes from the dashboard's own pages: a browser sends
    `Origin` with every POST; a script with the bearer token may send none."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host
