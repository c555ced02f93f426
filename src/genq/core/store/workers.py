"""The worker registry: one row per run of a worker process, kept fresh by its presence loop.

A worker says what it is when it starts (name, host, pid, device, queues, versions), then keeps
`last_seen` (database clock), its state and its current job up to date. A worker that has not
been seen for longer than the lease is `lost`, decided here on read: nobody has to mark it.
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import sessionmaker

from genq.core.store.clock import as_utc, db_now_plus
from genq.core.store.models import JobRow, Worker


RECENT_S = 24 * 3600  # `client workers` shows lost and stopped runs of the last day; --all shows every one


class WorkerState(str, enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"
    LOST = "lost"  # never stored: a live state whose last_seen is older than the lease


@dataclass(frozen=True)
class WorkerIdentity:
    name: str
    host: str
    pid: int
    device: str  # "cuda:0", "cpu"
    device_name: str | None
    device_memory: int | None  # bytes
    queues: tuple[str, ...]
    versions: dict[str, str]


@dataclass(frozen=True)
class WorkerView:
    """A registry row as read, with its effective state and its current job's progress."""

    row: Worker
    state: WorkerState
    uptime_s: float
    job_progress: dict[str, Any] | None


class WorkerRegistry:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def register(self, identity: WorkerIdentity) -> str:
        """Add this process run to the registry (idle); returns its row id."""
        row_id = str(uuid.uuid4())
        with self.sessions() as session:
            session.add(Worker(id=row_id, name=identity.name, host=identity.host, pid=identity.pid,
                               device=identity.device, device_name=identity.device_name,
                               device_memory=identity.device_memory, queues=list(identity.queues),
                               versions=dict(identity.versions), state=WorkerState.IDLE.value, current_job=None,
                               jobs_done=0, started_at=db_now_plus(0), last_seen=db_now_plus(0)))
            session.commit()
        return row_id

    def seen(self, row_id: str, **gpu: int) -> None:
        """Seen: this worker is alive (and no longer `stopped`, should it have been marked so); `gpu`: its
        device's figures (gpu_utilization, gpu_memory_used) when it has them."""
        self._update(row_id, last_seen=db_now_plus(0), **gpu)

    def busy(self, row_id: str, job_id: str) -> None:
        self.report(row_id, job_id)

    def idle(self, row_id: str, finished_jobs: int = 1) -> None:
        self.report(row_id, None, finished_jobs)

    def report(self, row_id: str, current_job: str | None, finished_jobs: int = 0, **gpu: int) -> bool:
        """Busy with `current_job` (idle when None), `finished_jobs` more done; also seen."""
        state = WorkerState.BUSY if current_job else WorkerState.IDLE
        self._update(row_id, state=state.value, current_job=current_job, last_seen=db_now_plus(0),
                     jobs_done=Worker.jobs_done + finished_jobs, **gpu)
        return True

    def stopped(self, row_id: str, now: bool = True) -> bool:
        """Stopped cleanly; `now` False: it stopped earlier, when this could not be written (its last_seen stays)."""
        values = {"last_seen": db_now_plus(0)} if now else {}
        self._update(row_id, state=WorkerState.STOPPED.value, current_job=None, **values)
        return True

    def _update(self, row_id: str, **values: Any) -> None:
        with self.sessions() as session:
            session.execute(update(Worker).where(Worker.id == row_id).values(**values))
            session.commit()

    def list(self, lease_s: float, include_all: bool = False, limit: int = 500) -> list[WorkerView]:
        """The fleet: live workers, then lost ones, then stopped ones. `lost` means silent past
        `lease_s` (database clock). Without `include_all`: lost runs of the last RECENT_S, and a
        stopped run only when its name has no live or newer run (the history stays in the table)."""
        lost = (Worker.state != WorkerState.STOPPED.value) & (Worker.last_seen < db_now_plus(-lease_s))
        effective = case((lost, WorkerState.LOST.value), else_=Worker.state).label("effective")
        query = select(Worker, effective).order_by(Worker.name, Worker.started_at.desc()).limit(limit)
        if not include_all:
            query = query.where(Worker.last_seen >= db_now_plus(-RECENT_S))
        with self.sessions() as session:
            now = as_utc(_parse(session.scalar(select(db_now_plus(0)))))
            rows = session.execute(query).all()
            job_ids = [row.current_job for row, _ in rows if row.current_job]
            jobs = {job.id: job for job in session.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))} if job_ids else {}
        views, named = [], set()
        for row, state in rows:  # newest run of each name first
            state = WorkerState(state)
            newest_of_name = row.name not in named
            named.add(row.name)
            if not include_all and state is WorkerState.STOPPED and not newest_of_name:
                continue
            job = jobs.get(row.current_job) if state is WorkerState.BUSY else None
            progress = None if job is None else {"id": job.id, "kind": job.kind, "status": job.status,
                                                 "done": job.progress_done, "total": job.progress_total,
                                                 "message": job.progress_message}
            until = now if state in (WorkerState.IDLE, WorkerState.BUSY) else as_utc(_parse(row.last_seen))
            views.append(WorkerView(row, state, (until - as_utc(_parse(row.started_at))).total_seconds(), progress))
        order = {WorkerState.BUSY: 0, WorkerState.IDLE: 0, WorkerState.LOST: 1, WorkerState.STOPPED: 2}
        return sorted(views, key=lambda view: (order[view.state], view.row.name))


def worker_registry(sessions: sessionmaker) -> WorkerRegistry:
    """The registry over this store: what a worker's presence writes through and the read model reads."""
    return WorkerRegistry(sessions)


def _parse(value: Any) -> datetime:
    """SQLite returns the database clock as text."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
