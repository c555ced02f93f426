"""Groups: the jobs of one sweep, stored in one transaction (all of them, or none)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import insert, update

from genq.core.params import JobParams, RunOptions
from genq.core.store.clock import db_now_plus
from genq.core.store.jobs import JobStore, submitted_event_values
from genq.core.store.models import GroupRow, JobRow, JobEvent, utcnow
from genq.core.store.states import JobStatus


@dataclass(frozen=True)
class PlannedJob:
    """One point of a sweep, validated: its parameters, the job it waits for, its swept values."""

    params: JobParams
    depends_on: str | None
    point: dict[str, Any]


class GroupStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.sessions = jobs.sessions

    def create(self, kind: str, name: str | None, definition: dict[str, Any], planned: Sequence[PlannedJob],
               options: RunOptions, owner: str | None = None) -> tuple[GroupRow, list[dict[str, Any]]]:
        """Insert the group and every job of it in one transaction (bulk inserts); returns the group
        and the jobs' column values. Queued jobs' send times start now, by the database's clock.
        OverLimit (nothing stored) when its jobs would take `owner` past their max_queued."""
        group = GroupRow(id=str(uuid.uuid4()), name=name, kind=kind, created_at=utcnow(), definition=definition,
                      size=len(planned), owner=owner, notify_url=options.notify)
        rows = [self.jobs.new_row(plan.params, plan.depends_on, options, owner=owner, group_id=group.id,
                                  group_point=plan.point, group_index=index)
                for index, plan in enumerate(planned)]
        with self.jobs.within_queued_limit(owner, len(rows)) as session:
            session.add(group)
            session.flush()
            session.execute(insert(JobRow), rows)
            session.execute(insert(JobEvent), [submitted_event_values(row["id"], row["submitted_at"], row["status"])
                                               for row in rows])
            session.execute(update(JobRow).where(JobRow.group_id == group.id, JobRow.status == JobStatus.QUEUED.value)
                            .values(last_sent_at=db_now_plus(0)))
            session.commit()
            session.expunge(group)
        return group, rows

    def jobs_of(self, group_id: str) -> list[JobRow]:
        """The read model's (genq.core.reads), here for the lifecycle."""
        return self.jobs.reads.group_jobs(group_id)
