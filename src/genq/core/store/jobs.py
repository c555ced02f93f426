"""Reading and writing jobs and what hangs off them (metrics, artifacts, logs, events).

Writes of a run are fenced: each names the attempt it belongs to and is refused (RunSuperseded)
once the job has moved on to another attempt or out of `running`. The fence is an UPDATE of the
job's row in the same transaction as the write, so a takeover cannot commit in between.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import and_, exists, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from genq.core.config import DEFAULT_QUEUE
from genq.core.params import JobParams, RunOptions, SpecError
from genq.core.reads import JobFilter, JobNotFound, Reads
from genq.core.store.artifacts import StoredFile
from genq.core.store.clock import db_now_plus
from genq.core.store.models import ArtifactRow, JobRow, JobEvent, JobLog, Metric, UserRow, utcnow
from genq.core.store.states import JobStatus, TransitionError, transition
from genq.core.store.users import (check_queued_limit, lock_running_limited_owner_of, running_slots,
                                   under_running_limit)

class RunSuperseded(RuntimeError):
    """This run's attempt is no longer the job's (it was taken over, or the job ended): stop writing."""


@dataclass(frozen=True)
class Beat:
    """What one heartbeat learned: whether this run still holds the job, and whether to cancel."""

    holds_lease: bool
    cancel_requested: bool


@dataclass
class RunWrites:
    """A run's small writes not in the store yet: its latest progress, metric points and log lines.
    They are written together, in one fenced transaction (with an artifact, or with the run's end)."""

    progress: tuple[int, int, str] | None = None  # done, total, message
    metrics: list[tuple[int, str, float]] = field(default_factory=list)  # step, name, value
    logs: list[tuple[str, str, datetime]] = field(default_factory=list)  # level, message, when it was said
    preview: bytes | None = None  # the latest preview PNG

    def __bool__(self) -> bool:
        return self.progress is not None or bool(self.metrics) or bool(self.logs) or self.preview is not None

    def progress_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.progress is not None:
            done, total, message = self.progress
            values.update(progress_done=done, progress_total=total, progress_message=message)
        if self.preview is not None:
            values.update(preview_png=self.preview, preview_at=utcnow())
        return values


@dataclass(frozen=True)
class CancelOutcome:
    status: JobStatus
    message: str
    never_ran: bool = False  # this request cancelled a job that had not started: what waits for it must not wait on


class JobStore:
    def __init__(self, sessions: sessionmaker, queue_for: Callable[[str], str] | None = None) -> None:
        self.sessions = sessions
        self.queue_for = queue_for or (lambda kind: DEFAULT_QUEUE)  # a kind's queue when a submit names none

    # -- jobs ---------------------------------------------------------------------------
    def create(self, spec: JobParams, depends_on: str | None = None, options: RunOptions | None = None,
               owner: str | None = None) -> JobRow:
        """Insert a job: `waiting` when it depends on another job, else `queued` (its send time starts
        now, by the database's clock, so a wake-up lost before it was sent is re-sent). With an
        idempotency key already used, the existing job is returned instead (`job.created` False), if it
        is the same job: the same kind and parameters (a seed not given takes the existing job's);
        else SpecError naming it. A seed not given is chosen here, once the job is new. OverLimit (nothing
        stored) when it would take `owner` past their max_queued."""
        options = options or RunOptions()
        if options.idempotency_key and (existing := self._by_key(options.idempotency_key)) is not None:
            return same_job_or_refuse(existing, spec)
        job = JobRow(**self.new_row(spec, depends_on, options, owner=owner),
                     last_sent_at=None if depends_on else db_now_plus(0))
        try:
            with self.within_queued_limit(owner, 1) as session:
                session.add(job)
                session.flush()  # the job's row before its event's (the unit of work orders them by nothing)
                session.add(submitted_event(job))
                session.commit()
        except IntegrityError:
            if options.idempotency_key and (existing := self._by_key(options.idempotency_key)) is not None:
                return same_job_or_refuse(existing, spec)  # the same key submitted at the same moment elsewhere
            raise
        created = self.get(job.id)
        created.created = True
        return created

    def new_row(self, spec: JobParams, depends_on: str | None, options: RunOptions, **values: Any) -> dict[str, Any]:
        """A new job's column values: `waiting` when it depends on another job, else `queued`; its seed
        chosen when none was given, so the job records what it runs with. `values`: further columns
        (its owner; a group's id, point and index)."""
        spec = spec.with_seed()
        status = JobStatus.WAITING if depends_on else JobStatus.QUEUED
        return dict(id=str(uuid.uuid4()), kind=spec.kind, status=status.value, params=spec.to_json(),
                    attempts=0, depends_on=depends_on, cancel_requested=False, submitted_at=utcnow(),
                    progress_done=0, progress_total=0, time_limit_s=options.time_limit_s, retries=options.retries,
                    failed_runs=0, idempotency_key=options.idempotency_key,
                    queue=options.queue or self.queue_for(spec.kind), priority=options.priority,
                    notify_url=options.notify, **values)

    @contextmanager
    def within_queued_limit(self, owner: str | None, adding: int) -> Iterator[Session]:
        """A session to insert `adding` jobs of `owner` in, in one transaction with the check of their
        max_queued (OverLimit, nothing written, when it would be passed). When they have one, the
        transaction holds the right to write from its start (PostgreSQL: their user row locked; SQLite:
        BEGIN IMMEDIATE), so no other submit of theirs commits between the count and the insert."""
        limited = owner is not None and self.has_queued_limit(owner)
        with self.sessions() as session:
            if limited:
                if session.get_bind().dialect.name == "sqlite":
                    session.execute(text("BEGIN IMMEDIATE"))
                check_queued_limit(session, owner, adding)
            yield session

    def has_queued_limit(self, owner: str) -> bool:
        with self.sessions() as session:
            return session.scalar(select(UserRow.max_queued).where(UserRow.name == owner)) is not None

    def startable_of_owner_of(self, job_id: str) -> list[str]:
        """After `job_id` stopped running: queued, due jobs of its owner that may start now under their
        max_running (highest priority, then oldest first); [] when the owner has no running limit."""
        due = JobRow.run_after.is_(None) | (JobRow.run_after <= db_now_plus(0))
        with self.sessions() as session:
            owner = session.scalar(select(JobRow.owner).where(JobRow.id == job_id))
            slots = running_slots(session, owner) if owner is not None else None
            if not slots:
                return []
            return list(session.scalars(
                select(JobRow.id).where(JobRow.owner == owner, JobRow.status == JobStatus.QUEUED.value, due)
                .order_by(JobRow.priority.desc(), JobRow.submitted_at).limit(slots)))

    def _by_key(self, key: str) -> JobRow | None:
        with self.sessions() as session:
            job = session.scalar(select(JobRow).where(JobRow.idempotency_key == key))
        if job is not None:
            job.created = False
        return job

    # -- reads: the read model's (genq.core.reads), here for the worker, the lifecycle and the tests
    @cached_property
    def reads(self) -> Reads:
        return Reads(self.sessions)

    def get(self, job_id: str) -> JobRow | None:
        return self.reads.get(job_id)

    def list(self, status: str | None = None, kind: str | None = None, limit: int | None = 20,
             group_id: str | None = None) -> list[JobRow]:
        return self.reads.jobs(JobFilter(status=status, kind=kind, group_id=group_id), limit or None)

    def transition(self, job_id: str, expected: JobStatus, to: JobStatus, **kwargs: Any) -> None:
        with self.sessions() as session:
            transition(session, job_id, expected, to, **kwargs)

    def mark_sent(self, job_ids: list[str]) -> None:
        """Record (database clock) that wake-ups for these queued jobs were just sent."""
        with self.sessions() as session:
            session.execute(update(JobRow).where(JobRow.id.in_(job_ids)).values(last_sent_at=db_now_plus(0)))
            session.commit()

    def routes(self, job_ids: list[str]) -> dict[str, tuple[str, int]]:
        """Each job's queue and priority: where and how urgently its wake-up is sent."""
        with self.sessions() as session:
            rows = session.execute(select(JobRow.id, JobRow.queue, JobRow.priority).where(JobRow.id.in_(job_ids))).all()
        return {job_id: (queue, priority) for job_id, queue, priority in rows}

    def waiting_on(self, job_id: str) -> list[JobRow]:
        """Jobs in `waiting` for `job_id` to succeed."""
        with self.sessions() as session:
            return list(session.scalars(select(JobRow).where(JobRow.depends_on == job_id, JobRow.status == JobStatus.WAITING.value)))

    # -- runs: claim, lease, fenced writes ---------------------------------------------
    def claim(self, job_id: str, worker: str, lease_s: float, device: str | None = None,
              reason: str = "claimed", queues: Sequence[str] | None = None) -> JobRow | None:
        """queued (and due: past a retry's back-off) -> running for this worker with a fresh lease, in one
        UPDATE ... RETURNING: the claimed row (its `attempts` is the new attempt), or None when the job
        is not queued and due (another delivery claimed it, or it retries later), or its owner already
        has their max_running jobs running. On PostgreSQL a limited owner's user row is locked first,
        so two claims of their jobs count each other's runs; SQLite runs one writer at a time."""
        claimable = (JobRow.run_after.is_(None) | (JobRow.run_after <= db_now_plus(0))) & under_running_limit()
        if queues is not None:
            claimable = claimable & JobRow.queue.in_(list(queues))
        with self.sessions() as session:
            lock_running_limited_owner_of(session, job_id)
            try:
                return transition(session, job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker=worker, device=device,
                                  reason=reason, values={"lease_until": db_now_plus(lease_s)}, only_if=claimable,
                                  returning=True)
            except TransitionError:
                return None

    def claim_companions(self, first: JobRow, queues: tuple[str, ...], worker: str, lease_s: float, device: str | None,
                         take: Callable[[JobRow], bool], candidates: int = 64) -> list[tuple[str, int]]:
        """Claim queued jobs of `first`'s kind on `queues` to run together with it: (id, attempt) each.

        Candidates are read highest priority first, then oldest; `take(job)` says which to add (it
        keeps its own budget). On PostgreSQL the candidates are locked FOR UPDATE SKIP LOCKED and all
        claimed in one transaction: two workers never wait on or fight for the same rows. Elsewhere
        (SQLite) each claim is its own conditional transition; one another worker won is skipped.
        Jobs whose owner has a running limit are never companions: each is claimed by its own delivery.
        """
        due = JobRow.run_after.is_(None) | (JobRow.run_after <= db_now_plus(0))
        unlimited = ~exists().where(UserRow.name == JobRow.owner, UserRow.max_running.is_not(None))
        query = (select(JobRow).where(JobRow.status == JobStatus.QUEUED.value, JobRow.kind == first.kind,
                                   JobRow.queue.in_(queues), JobRow.id != first.id, due, unlimited)
                 .order_by(JobRow.priority.desc(), JobRow.submitted_at).limit(candidates))
        reason = f"claimed to run in one batch with job {first.id}"
        with self.sessions() as session:
            locking = session.get_bind().dialect.name == "postgresql"
            if locking:
                query = query.with_for_update(skip_locked=True)
            chosen = [(job.id, job.attempts) for job in session.scalars(query) if take(job)]
            if not chosen:
                session.rollback()
                return []
            if locking:  # the rows are ours until commit: every transition holds
                for job_id, _ in chosen:
                    transition(session, job_id, JobStatus.QUEUED, JobStatus.RUNNING, worker=worker, device=device,
                               reason=reason, values={"lease_until": db_now_plus(lease_s)}, commit=False)
                session.commit()
                return [(job_id, attempts + 1) for job_id, attempts in chosen]
            session.rollback()
        claimed = [self.claim(job_id, worker, lease_s, device, reason) for job_id, _ in chosen]
        return [(job.id, job.attempts) for job in claimed if job is not None]  # None: another worker claimed it first

    def heartbeat(self, job_id: str, attempt: int, lease_s: float) -> Beat:
        """Renew this run's lease (one UPDATE ... RETURNING): whether it still holds it, and cancellation."""
        with self.sessions() as session:
            cancel = session.execute(
                update(JobRow).where(self._run_is(job_id, attempt))
                .values(lease_until=db_now_plus(lease_s), heartbeat_at=db_now_plus(0))
                .returning(JobRow.cancel_requested)
            ).scalar_one_or_none()
            session.commit()
        return Beat(holds_lease=cancel is not None, cancel_requested=bool(cancel))

    def expired_leases(self, limit: int = 100) -> list[JobRow]:
        """Running jobs whose lease has passed by the database's clock. On PostgreSQL a row locked by
        another transaction (its run paused inside a write) is skipped, not waited for: the server ends
        that transaction within its idle timeout, and a later pass takes the job over."""
        query = select(JobRow).where(JobRow.status == JobStatus.RUNNING.value,
                                     JobRow.lease_until < db_now_plus(0)).limit(limit)
        with self.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            return list(session.scalars(query))

    def lease_expired(self, job_id: str) -> bool:
        with self.sessions() as session:
            return session.scalar(select(JobRow.id).where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
                                                       JobRow.lease_until < db_now_plus(0))) is not None

    def queued_unsent_since(self, seconds: float, limit: int = 1000) -> list[tuple[str, str]]:
        """(id, queue) of queued jobs whose last wake-up was sent longer than `seconds` ago (database clock).
        Jobs their owner's max_running holds back are left out: a claim would refuse them, and the end of
        one of that owner's runs wakes them (or, if that wake-up is lost, a later pass, once under the limit)."""
        with self.sessions() as session:
            unsent = JobRow.last_sent_at.is_(None) | (JobRow.last_sent_at < db_now_plus(-seconds))
            due = JobRow.run_after.is_(None) | (JobRow.run_after <= db_now_plus(0))
            return [tuple(row) for row in session.execute(
                select(JobRow.id, JobRow.queue).where(JobRow.status == JobStatus.QUEUED.value, unsent, due,
                                                      under_running_limit())
                .order_by(JobRow.last_sent_at).limit(limit))]

    def count(self, status: JobStatus, queue: str | None = None) -> int:
        query = select(func.count()).select_from(JobRow).where(JobRow.status == status.value)
        if queue is not None:
            query = query.where(JobRow.queue == queue)
        with self.sessions() as session:
            return session.scalar(query)

    def waiting_on_finished(self, limit: int = 1000) -> list[JobRow]:
        """Waiting jobs whose dependency has ended (or vanished): nobody released them yet."""
        dependency = JobRow.__table__.alias("dependency")
        finished = [s.value for s in JobStatus if s.finished]
        with self.sessions() as session:
            return list(session.scalars(
                select(JobRow).outerjoin(dependency, dependency.c.id == JobRow.depends_on)
                .where(JobRow.status == JobStatus.WAITING.value,
                       (dependency.c.status.in_(finished)) | (dependency.c.id.is_(None))).limit(limit)))

    @staticmethod
    def _run_is(job_id: str, attempt: int):
        return and_(JobRow.id == job_id, JobRow.attempts == attempt, JobRow.status == JobStatus.RUNNING.value)

    def _fence(self, session: Session, job_id: str, attempt: int, values: dict[str, Any] | None = None) -> None:
        """Lock the job's row for this transaction if this run still holds it (writing `values` to it);
        else RunSuperseded."""
        matched = session.execute(update(JobRow).where(self._run_is(job_id, attempt))
                                  .values(**(values or {"attempts": JobRow.attempts}))).rowcount
        if matched != 1:
            session.rollback()
            raise RunSuperseded(f"job {job_id} is no longer at attempt {attempt}")

    def request_cancel(self, job_id: str) -> CancelOutcome:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        status = JobStatus(job.status)
        if status in (JobStatus.QUEUED, JobStatus.WAITING):
            try:
                self.transition(job_id, status, JobStatus.CANCELLED, reason="cancelled by user")
                return CancelOutcome(JobStatus.CANCELLED, "cancelled before it started", never_ran=True)
            except TransitionError:
                return self.request_cancel(job_id)  # it started meanwhile: ask the runner
        if status is JobStatus.RUNNING:
            with self.sessions() as session:
                session.execute(update(JobRow).where(JobRow.id == job_id).values(cancel_requested=True))
                session.commit()
            return CancelOutcome(JobStatus.RUNNING, "cancellation requested: the job stops at its next step boundary")
        return CancelOutcome(status, f"already {status.value}: nothing to cancel")

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def set_progress(self, job_id: str, attempt: int, done: int, total: int, message: str) -> None:
        self.record(job_id, attempt, RunWrites(progress=(done, total, message)))

    # -- a run's writes: metrics, artifacts, logs (fenced) -----------------------------
    def record_metric(self, job_id: str, attempt: int, step: int, name: str, value: float) -> None:
        self.record(job_id, attempt, RunWrites(metrics=[(step, name, value)]))

    def record_artifact(self, job_id: str, attempt: int, stored: StoredFile, publish=None) -> None:
        self.record(job_id, attempt, RunWrites(), stored, publish)

    def record(self, job_id: str, attempt: int, writes: RunWrites, stored: StoredFile | None = None,
               publish=None, before_commit=None) -> None:
        """A run's pending writes and, when given, an artifact, in one transaction fenced by the attempt.
        `publish()` (putting the artifact's file in place) runs inside it, so a superseded run can
        neither index nor publish; so does `before_commit()`."""
        with self.sessions() as session:
            self._fence(session, job_id, attempt, writes.progress_values())
            self._add_writes(session, job_id, attempt, writes)
            if stored is not None:
                if publish is not None:
                    publish()
                _upsert(session, ArtifactRow, {"job_id": job_id, "name": stored.name,
                                            "relative_path": stored.relative_path, "media_type": stored.media_type,
                                            "size": stored.size, "sha256": stored.sha256, "created_at": utcnow()},
                        keys=("job_id", "name"))
            if before_commit is not None:
                before_commit()
            session.commit()

    def finish(self, job_id: str, attempt: int, to: JobStatus, worker: str, reason: str | None,
               values: dict[str, Any], writes: RunWrites | None = None, only_if: Any = None) -> None:
        """A run's final transition with its last pending writes, in one transaction; TransitionError
        (nothing written) when the run no longer holds the job, or `only_if` does not hold."""
        writes = writes or RunWrites()
        with self.sessions() as session:
            # its preview goes with the run: what the job made is in its artifacts now
            transition(session, job_id, JobStatus.RUNNING, to, worker=worker, reason=reason, expected_attempts=attempt,
                       values={**writes.progress_values(), "preview_png": None, **values}, only_if=only_if, commit=False)
            self._add_writes(session, job_id, attempt, writes)
            session.commit()

    @staticmethod
    def _add_writes(session: Session, job_id: str, attempt: int, writes: RunWrites) -> None:
        for step, name, value in writes.metrics:
            _upsert(session, Metric, {"job_id": job_id, "step": step, "name": name, "value": float(value),
                                      "recorded_at": utcnow()}, keys=("job_id", "name", "step"))
        session.add_all([JobLog(job_id=job_id, level=level, message=message, at=at, attempt=attempt)
                         for level, message, at in writes.logs])

    def append_log(self, job_id: str, level: str, message: str, attempt: int | None = None) -> None:
        """A log line; fenced when it comes from a run (`attempt` given)."""
        if attempt is not None:
            return self.record(job_id, attempt, RunWrites(logs=[(level, message, utcnow())]))
        with self.sessions() as session:
            session.add(JobLog(job_id=job_id, level=level, message=message, at=utcnow(), attempt=None))
            session.commit()

    def metrics(self, job_id: str) -> list[Metric]:
        return self.reads.metrics(job_id)

    def artifacts(self, job_id: str) -> list[ArtifactRow]:
        return self.reads.artifacts(job_id)

    def artifact(self, job_id: str, name: str) -> ArtifactRow | None:
        return self.reads.artifact(job_id, name)

    def logs(self, job_id: str, after_id: int = 0) -> list[JobLog]:
        return self.reads.logs(job_id, after_id)

    def events(self, job_id: str) -> list[JobEvent]:
        return self.reads.events(job_id)


def same_job_or_refuse(existing: JobRow, spec: JobParams) -> JobRow:
    """The job an idempotency key created, when `spec` asks for that same job; else SpecError."""
    wanted = spec.to_json()
    if "seed" in wanted and wanted["seed"] is None:
        wanted["seed"] = existing.params.get("seed")
    if existing.kind != spec.kind or existing.params != wanted:
        what = f"a {existing.kind} job" if existing.kind != spec.kind else "other parameters"
        raise SpecError(f"was used for job {existing.id}, with {what}: give another key, or the same "
                        "parameters to get that job", "idempotency_key")
    return existing


def submitted_event(job: JobRow) -> JobEvent:
    return JobEvent(**submitted_event_values(job.id, job.submitted_at, job.status))


def submitted_event_values(job_id: str, at, status: str) -> dict[str, Any]:
    return dict(job_id=job_id, at=at, from_status=None, to_status=status, reason="submitted")


def _upsert(session: Session, model, values: dict[str, Any], keys: tuple[str, ...]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: a row is replaced atomically, never deleted and re-added."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).values(**values)
    session.execute(statement.on_conflict_do_update(
        index_elements=list(keys), set_={k: statement.excluded[k] for k in values if k not in keys}))
