"""SQLAlchemy models: the SQL store is the source of truth about every job."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    depends_on: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When a wake-up was last sent (database clock); set at insert for a job that starts queued.
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A running job's lease (database clock), renewed by its heartbeat; taken over only once it has passed.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    time_limit_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # a run past this ends failed
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # failed runs run again this often
    failed_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # a retry's back-off
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True, index=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    queue: Mapped[str] = mapped_column(String(64), default="gpu", server_default="gpu")  # the broker queue it is sent to
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")  # 0..9, higher runs first
    group_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)  # its sweep or group
    group_point: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # its swept values: {"beta": 4}
    group_index: Mapped[int | None] = mapped_column(Integer, nullable=True)  # its place in the sweep, from 0
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the user who submitted it
    # A running job's small picture of where it is (sd: its latents every few steps; train-vae: reconstructions
    # each epoch), written with its progress; read only when asked for (deferred), its time tells that one exists.
    preview_png: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    preview_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notify_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # its webhook (None: its owner's default)

    __table_args__ = (Index("ix_jobs_status_kind_queue", "status", "kind", "queue"),
                      Index("ix_jobs_submitted_at_id", "submitted_at", "id"),
                      Index("ix_jobs_owner_status", "owner", "status"))  # a user's jobs; their running count at a claim


class GroupRow(Base):
    """Jobs submitted as one piece of work: a sweep (one job per point of its parameters' product)."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # {"fixed": {parameter: value}, "swept": {parameter: [values]}}: what was asked for, as given
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    notify_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # its webhook (None: its owner's default)


class UserRow(Base):
    """Someone who submits through the server: a token (kept only as its sha256), limits, a webhook secret."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    max_running: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no limit
    max_queued: Mapped[int | None] = mapped_column(Integer, nullable=True)  # waiting + queued jobs; None: no limit
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notify_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # the webhook of their jobs submitted without one


class WebhookDelivery(Base):
    """The outbox: one webhook to send, written in the transaction that ended its job (or its group's last
    job). Its id is the `Genq-Delivery` header, the same on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_due", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, unique=True)  # a job's end
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"), nullable=True, unique=True)  # a group's
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # whose webhook secret signs it
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the JSON sent, byte for byte the same on every attempt
    state: Mapped[str] = mapped_column(String(16))  # pending, delivered, given_up
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When it is due (database clock); a claimed one is pushed past its POST, so a server killed mid-POST hands it on.
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    """One POST of a delivery: when, and the HTTP status or the error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class JobEvent(Base):
    """Append-only audit of every status transition."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    device: Mapped[str | None] = mapped_column(String(255), nullable=True)  # where a claimed run runs: "cuda:0 (NVIDIA H100)"


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "name", "step", name="uq_metrics_job_name_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    relative_path: Mapped[str] = mapped_column(String(512))
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobLog(Base):
    """The job's own log lines (what the run function said), kept with the job."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the run that wrote it


class Worker(Base):
    """One run of one worker process (a restarted worker is a new row under the same name).

    `state` is what the worker last said (idle, busy, stopped); a worker silent past the lease is
    `lost` (genq.core.store.workers decides that on read, by the database's clock).
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)  # host:gpu0
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))  # cuda:0, cpu
    device_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device_memory: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # bytes
    queues: Mapped[list[str]] = mapped_column(JSON)
    versions: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    current_job: Mapped[str | None] = mapped_column(String(36), nullable=True)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # NVML's figures of a GPU worker's device at its last heartbeat; None on a CPU worker
    gpu_utilization: Mapped[int | None] = mapped_column(Integer, nullable=True)  # percent
    gpu_memory_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # bytes
