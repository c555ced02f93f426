"""The job state machine: one enum, one table of allowed transitions, one `transition()`."""
from __future__ import annotations

from enum import Enum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from genq.core.store.clock import db_clock_now, db_now_plus
from genq.core.store.models import JobRow, JobEvent
from genq.core.store.outbox import record_end


class JobStatus(str, Enum):
    WAITING = "waiting"  # for another job to succeed; released to queued exactly once
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
FINISHED_VALUES = frozenset(status.value for status in FINISHED)

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    # running -> queued: the job's lease expired (its worker was lost) and it is taken over.
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class TransitionError(RuntimeError):
    """An illegal transition, or a legal one that lost a race (the job was not in `expected`)."""


def transition(
    session: Session,
    job_id: str,
    expected: JobStatus,
    to: JobStatus,
    *,
    worker: str | None = None,
    reason: str | None = None,
    expected_attempts: int | None = None,
    values: dict[str, Any] | None = None,
    only_if: Any = None,
    device: str | None = None,
    commit: bool = True,
    returning: bool = False,
) -> JobRow | None:
    """Move a job from `expected` to `to` and record the event, in one transaction.

    The UPDATE only matches while the job is still in `expected` (and, when given, still at
    `expected_attempts`), so of two concurrent callers exactly one wins; the loser gets
    TransitionError and nothing is written. With `commit=False` the caller commits (several
    transitions in one transaction); a refused one rolls back all of them. With `returning`, the
    job's row as the UPDATE left it is returned (read in the same statement, RETURNING).
    A move to an ended state writes its webhooks to the outbox in the same transaction (core.store.outbox).
    """
    if to not in ALLOWED[expected]:
        raise TransitionError(f"illegal transition {expected.value} -> {to.value} for job {job_id}")
    now = db_clock_now()  # when the UPDATE runs (after any wait for the row), not when Python got here
    changes: dict[str, Any] = {"status": to.value, **(values or {})}
    if to is JobStatus.RUNNING:
        changes.update(started_at=now, heartbeat_at=db_now_plus(0), worker_host=worker, attempts=JobRow.attempts + 1)
    if expected is JobStatus.RUNNING:
        changes["lease_until"] = None
    if to.finished:
        changes["finished_at"] = now
    statement = update(JobRow).where(JobRow.id == job_id, JobRow.status == expected.value)
    if expected_attempts is not None:
        statement = statement.where(JobRow.attempts == expected_attempts)
    if only_if is not None:  # a further condition checked in the same UPDATE (e.g. the lease has passed)
        statement = statement.where(only_if)
    statement = statement.values(**changes).execution_options(synchronize_session=False)
    try:
        row = None
        if returning or to.finished:
            row = session.scalars(statement.returning(JobRow)).one_or_none()
            matched = 0 if row is None else 1
        else:
            matched = session.execute(statement).rowcount
        if matched != 1:
            raise TransitionError(
                f"job {job_id} is no longer {expected.value}: transition to {to.value} refused"
            )
        session.add(JobEvent(job_id=job_id, at=now, from_status=expected.value, to_status=to.value,
                             worker=worker, reason=reason, device=device))
        if to.finished:
            record_end(session, row, FINISHED_VALUES)
        if commit:
            session.commit()
        return row
    except BaseException:
        session.rollback()
        raise
