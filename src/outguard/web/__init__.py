"""The dashboard (`outguard run --web 127.0.0.1:8765`): a small web application the agent
serves from its own event loop, to look at what the agent sees.

Place in the data flow: store, state directory, the agent's counters and feeds → **web** →
a browser. Read-only: the pages show; nothing here applies, confirms or deletes. `auth` (the
token, the session, CSRF, the security headers), `sources` (what is read, on worker threads,
and how a page is rendered), `incidents` (pages of incidents, the detail with its explain, the
live feed, the JSON API), `pages` (the HTML pages and their SVG charts), `app` (the Starlette
application and uvicorn's listener in the agent's loop). Where it may listen is
`policy.webconf`; `service.webserve` composes it into the agent.
"""
