"""The answers' shapes, for the OpenAPI schema: what `client ... --json` prints, field by field.

Each model allows further keys, so a field `--json` gains later is passed on, never dropped.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class Progress(Shape):
    done: int
    total: int
    message: str | None


class JobSummary(Shape):
    """`client status --json`, `client list --json` (one item), `client submit --json`."""

    id: str
    kind: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    worker: str | None
    depends_on: str | None
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    lease_until: str | None
    queue: str
    priority: int
    group: str | None
    group_point: dict[str, Any] | None
    progress: Progress


class MetricPoint(Shape):
    step: int
    value: float


class Artifact(Shape):
    """`client artifacts --json` (one item)."""

    name: str
    path: str
    media_type: str
    bytes: int
    sha256: str


class Event(Shape):
    at: str | None
    to: str
    reason: str | None


class Run(Shape):
    attempt: int
    worker: str | None
    device: str | None
    started_at: str | None
    ended_at: str | None
    ended: str | None
    batch: str | None


class WebhookAttempt(Shape):
    at: str | None
    http_status: int | None
    error: str | None


class Webhook(Shape):
    """A webhook delivery of the job's end, with every attempt."""

    id: str
    url: str
    state: str
    delivered_at: str | None
    next_attempt_at: str | None
    attempts: list[WebhookAttempt]


class JobDetails(JobSummary):
    """`client show --json`."""

    metrics: dict[str, list[MetricPoint]]
    took: str
    artifacts: list[Artifact]
    events: list[Event]
    runs: list[Run]
    webhooks: list[Webhook]


class LogLine(Shape):
    id: int
    at: str | None
    level: str
    message: str
    attempt: int | None


class JobCancelled(Shape):
    id: str
    status: str
    message: str
    failed_dependents: list[str]


class GroupListed(Shape):
    id: str
    name: str | None
    kind: str
    size: int
    created_at: str | None


class GroupSummary(GroupListed):
    """`client group --json`; `client submit --sweep ... --json`."""

    definition: dict[str, Any]
    swept: list[str]
    counts: dict[str, int]
    jobs: list[dict[str, Any]]
    webhooks: list[Webhook]  # its end's delivery, once its last job has ended


class GroupCancelled(Shape):
    id: str
    jobs: dict[str, str]


class WorkerSummary(Shape):
    """`client workers --json` (one item)."""

    name: str
    state: str
    device: str
    current_job: str | None
    progress: dict[str, Any] | None
    jobs_done: int
    uptime_s: float


class QueueCounts(Shape):
    queue: str
    queued: int
    running: int


class QueuePlace(Shape):
    id: str
    queue: str
    priority: int
    position: int


class QueueView(Shape):
    queues: list[QueueCounts]
    jobs: list[QueuePlace]
