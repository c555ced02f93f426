"""Reading and writing jobs and what hangs off them (metrics, artifacts, logs, events)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import sessionmaker

from genq.core.params import JobParams
from genq.core.store.artifacts import StoredFile
from genq.core.store.models import Artifact, Job, JobEvent, JobLog, Metric, utcnow
from genq.core.store.states import JobStatus, TransitionError, transition

MIN_ID_PREFIX = 4


class JobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class CancelOutcome:
    status: JobStatus
    message: str
    never_ran: bool = False  # this request cancelled a queued job: what waits for it must not wait on


class JobStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    # -- jobs ---------------------------------------------------------------------------
    def create(self, spec: JobParams, depends_on: str | None = None) -> Job:
        job = Job(id=str(uuid.uuid4()), kind=spec.kind, status=JobStatus.QUEUED.value, params=spec.to_json(),
                  attempts=0, depends_on=depends_on, cancel_requested=False, submitted_at=utcnow(),
                  progress_done=0, progress_total=0)
        with self.sessions() as session:
            session.add(job)
            session.add(JobEvent(job_id=job.id, at=job.submitted_at, from_status=None,
                                 to_status=JobStatus.QUEUED.value, reason="submitted"))
            session.commit()
        return job

    def get(self, job_id: str) -> Job | None:
        with self.sessions() as session:
            return session.get(Job, job_id)

    def resolve(self, ref: str) -> Job:
        """A full job id or a unique prefix of at least MIN_ID_PREFIX characters."""
        ref = ref.strip().lower()
        job = self.get(ref)
        if job is not None:
            return job
        if len(ref) < MIN_ID_PREFIX:
            raise JobNotFound(f"no job {ref!r} (give the full id or at least {MIN_ID_PREFIX} characters of it)")
        with self.sessions() as session:
            matches = session.scalars(select(Job).where(Job.id.startswith(ref, autoescape=True)).limit(2)).all()
        if not matches:
            raise JobNotFound(f"no job {ref!r}")
        if len(matches) > 1:
            raise JobNotFound(f"{ref!r} matches several jobs: give more of the id")
        return matches[0]

    def list(self, status: str | None = None, kind: str | None = None, limit: int = 20) -> list[Job]:
        query = select(Job).order_by(Job.submitted_at.desc()).limit(limit)
        if status:
            query = query.where(Job.status == status)
        if kind:
            query = query.where(Job.kind == kind)
        with self.sessions() as session:
            return list(session.scalars(query))

    def transition(self, job_id: str, expected: JobStatus, to: JobStatus, **kwargs: Any) -> None:
        with self.sessions() as session:
            transition(session, job_id, expected, to, **kwargs)

    def fail_if_queued(self, job_id: str, reason: str, worker: str | None = None) -> bool:
        try:
            self.transition(job_id, JobStatus.QUEUED, JobStatus.FAILED, worker=worker, reason=reason,
                            values={"error": reason})
            return True
        except TransitionError:
            return False

    def mark_dispatched(self, job_id: str) -> bool:
        """Claim the right to send this job's message; True for exactly one caller."""
        with self.sessions() as session:
            matched = session.execute(
                update(Job).where(Job.id == job_id, Job.dispatched_at.is_(None)).values(dispatched_at=utcnow())
            ).rowcount
            session.commit()
        return matched == 1

    def waiting_on(self, job_id: str) -> list[Job]:
        """Queued jobs that wait for `job_id` to succeed."""
        with self.sessions() as session:
            return list(session.scalars(select(Job).where(Job.depends_on == job_id, Job.status == JobStatus.QUEUED.value)))

    def request_cancel(self, job_id: str) -> CancelOutcome:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        status = JobStatus(job.status)
        if status is JobStatus.QUEUED:
            try:
                self.transition(job_id, JobStatus.QUEUED, JobStatus.CANCELLED, reason="cancelled by user")
                return CancelOutcome(JobStatus.CANCELLED, "cancelled before it started", never_ran=True)
            except TransitionError:
                return self.request_cancel(job_id)  # it started meanwhile: ask the runner
        if status is JobStatus.RUNNING:
            with self.sessions() as session:
                session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
                session.commit()
            return CancelOutcome(JobStatus.RUNNING, "cancellation requested: the job stops at its next step boundary")
        return CancelOutcome(status, f"already {status.value}: nothing to cancel")

    def heartbeat(self, job_id: str) -> bool:
        """Refresh the running job's heartbeat; returns whether cancellation was requested."""
        with self.sessions() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                            .values(heartbeat_at=utcnow()))
            session.commit()
        return self.cancel_requested(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def set_progress(self, job_id: str, done: int, total: int, message: str) -> None:
        with self.sessions() as session:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(progress_done=done, progress_total=total, progress_message=message))
            session.commit()

    # -- metrics, artifacts, logs, events -----------------------------------------------
    def record_metric(self, job_id: str, step: int, name: str, value: float) -> None:
        with self.sessions() as session:
            session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.name == name, Metric.step == step))
            session.add(Metric(job_id=job_id, step=step, name=name, value=float(value), recorded_at=utcnow()))
            session.commit()

    def record_artifact(self, job_id: str, stored: StoredFile) -> None:
        with self.sessions() as session:
            session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == stored.name))
            session.add(Artifact(job_id=job_id, name=stored.name, relative_path=stored.relative_path,
                                 media_type=stored.media_type, size=stored.size, sha256=stored.sha256,
                                 created_at=utcnow()))
            session.commit()

    def append_log(self, job_id: str, level: str, message: str) -> None:
        with self.sessions() as session:
            session.add(JobLog(job_id=job_id, level=level, message=message, at=utcnow()))
            session.commit()

    def metrics(self, job_id: str) -> list[Metric]:
        with self.sessions() as session:
            return list(session.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.name, Metric.step)))

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.sessions() as session:
            return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))

    def artifact(self, job_id: str, name: str) -> Artifact | None:
        with self.sessions() as session:
            return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))

    def logs(self, job_id: str, after_id: int = 0) -> list[JobLog]:
        with self.sessions() as session:
            return list(session.scalars(select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id).order_by(JobLog.id)))

    def events(self, job_id: str) -> list[JobEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
