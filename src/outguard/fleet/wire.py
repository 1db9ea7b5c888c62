"""The fleet's wire: the pydantic models of every request and response body of the HTTP API
(/work/wt/FLEET-API.md is the contract), and the limits both sides enforce.

Shared by the central side (`fleet.server` validates every body with these models and answers
with them) and the agent side (`fleet.client`, `fleet.sender` build and parse them), so the two
cannot drift apart. Strict models: unknown keys are errors and nothing is coerced ("5" is not
an int), so a malformed body is refused with the field named instead of half understood.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

API_PREFIX = "/v1"
MAX_BODY = 1 << 20  # bytes: a larger body is refused with 413 before it is read whole
MAX_BATCH = 1000  # incidents or flows in one POST
MAX_WAIT = 60.0  # seconds a policy long-poll may wait
MAX_TS = 4_102_444_800.0  # 2100-01-01: a time past it is a broken clock, refused
HOST_PATTERN = r"^[A-Za-z0-9.-]{1,253}$"
_HOST_RE = re.compile(HOST_PATTERN)

Result = Literal["applied", "apply_failed", "verify_failed", "rolled_back", "running"]
# Results that halt a rollout when a host of one of its waves reports them.
FAILED_RESULTS: frozenset[str] = frozenset({"apply_failed", "verify_failed", "rolled_back"})
Mode = Literal["audit", "enforce"]

HostName = Annotated[str, StringConstraints(pattern=HOST_PATTERN)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Short = Annotated[str, StringConstraints(max_length=128)]
Detail = Annotated[str, StringConstraints(max_length=4096)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def valid_host(name: str) -> bool:
    """Whether `name` may name a host (the enrolment's rule, for the operator's CLI too)."""
    return bool(_HOST_RE.match(name))


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ErrorBody(_Wire):
    """Every non-2xx answer: what is wrong, naming the field."""

    error: str


class EnrollRequest(_Wire):
    """POST /v1/enroll: a one-time token from `outguard fleet enroll-token`."""

    token: Token
    host: HostName
    agent_version: Short


class EnrollResponse(_Wire):
    """201: the host's own credential, shown once (the server keeps its sha256 only)."""

    host_id: int
    credential: str


class PolicyResponse(_Wire):
    """GET /v1/policy 200: the version assigned to this host, and any lockdown in force."""

    version: int
    policy: str  # the policy's YAML text, as pushed
    rollout_id: int | None
    lockdown_until: float | None  # unix seconds


class ReportRequest(_Wire):
    """POST /v1/report: the outcome of applying a version; also the host's heartbeat."""

    version: int | None
    rollout_id: int | None
    result: Result
    detail: Detail
    mode: Mode | None
    agent_version: Short
    lockdown_until: float | None
    blocked_rate: float = Field(ge=0)  # blocked packets/s over the last minute


class OkResponse(_Wire):
    ok: bool


class Item(_Wire):
    """One incident or learned flow: `id` is unique per host (the agent's outbox key), so a
    batch sent again after a lost answer adds no row."""

    id: ItemId
    ts: float = Field(ge=0, lt=MAX_TS)  # unix seconds: the row's time (picks its day partition)
    record: dict[str, Any]


class IncidentBatch(_Wire):
    """POST /v1/incidents."""

    incidents: Annotated[list[Item], Field(max_length=MAX_BATCH)]


class FlowBatch(_Wire):
    """POST /v1/flows."""

    flows: Annotated[list[Item], Field(max_length=MAX_BATCH)]


class BatchResponse(_Wire):
    """200 of a batch: rows new to the server, and rows it already had."""

    accepted: int
    duplicates: int


def etag(version: int, lockdown_until: float | None) -> str:
    """The ETag of a policy answer (quoted): it changes when the version or the lockdown does."""
    return f'"{version}-{lockdown_until or 0}"'
