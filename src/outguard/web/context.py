"""What every route of the dashboard reads (`Web`), and how a page is rendered.

Place in the data flow: `app.build` makes one `Web` and hangs it on the application; the routes
(`app`, `pages`, `learned`, `api`) take it from the request (`web_of`). Jinja2 with autoescape
on: a cmdline, a DNS name or a path is text in every page, whatever it holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from outguard.web.auth import CSRF_FIELD, Secrets
from outguard.web.sources import Sampler, Sources

NAV = (("/", "Overview"), ("/incidents", "Incidents"), ("/top", "Top"), ("/feeds", "Feeds"),
       ("/dns", "DNS"), ("/learned", "Learned"))


@dataclass
class Web:
    """What every route reads: the sources, the keys, the sampler, the templates."""

    sources: Sources
    keys: Secrets
    sampler: Sampler
    secure: bool = False  # served over TLS: the cookie says Secure
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    env: Environment = field(default_factory=lambda: Environment(
        loader=PackageLoader("outguard.web", "templates"), autoescape=True,
        trim_blocks=True, lstrip_blocks=True))

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            nav=NAV, path=request.url.path, csrf=self.keys.csrf, csrf_field=CSRF_FIELD, **ctx)
        return HTMLResponse(html, status_code=status)


def web_of(request: Request) -> Web:
    got: Web = request.app.state.web
    return got


