"""Fleet: many hosts, one PostgreSQL. The central side (`server`, `schema`, `db`, `auth`,
`rollout`, `ops`) is a stateless HTTPS API in front of the database; the agent side (`client`,
`sender`, `outbox`, `agent`) enrols, fetches its policy and sends incidents and flows. `wire`
holds the bodies both sides speak.
"""
