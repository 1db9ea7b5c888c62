"""The dashboard (`outguard run --web 127.0.0.1:8765`): a small web application the agent
serves from its own event loop, to look at what the agent sees.

Place in the data flow: store, state directory, the agent's counters and feeds → **web** →
a browser. Read-only: the pages show; nothing here applies, confirms or deletes. `auth` (the
token, the session, CSRF, the security headers), `sources` (what is read, on worker threads),
`incidents` (pages, detail, the live feed), `pages`/`learned`/`api` (the routes), `svg` (charts
drawn on the server), `app` (the Starlette application), `server` (uvicorn in the agent's loop).
"""
