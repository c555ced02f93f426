"""The SQL the pages need, one page of rows at a time (never a whole table)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from genq.core.store.jobs import JobStore
from genq.core.store.models import Job

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
FILTERS = ("state", "kind", "group", "queue", "prompt")


@dataclass(frozen=True)
class JobFilter:
    state: str = ""
    kind: str = ""
    group: str = ""
    queue: str = ""
    prompt: str = ""

    @classmethod
    def from_query(cls, query) -> "JobFilter":
        return cls(**{name: (query.get(name) or "").strip()[:200] for name in FILTERS})

    def as_query(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FILTERS if getattr(self, name)}


def page_bounds(query) -> tuple[int, int]:
    """(limit, offset) from ?limit= and ?page= (from 1), clamped."""
    def number(name: str, default: int) -> int:
        try:
            return int(query.get(name, default))
        except ValueError:
            return default
    limit = min(max(number("limit", PAGE_SIZE), 1), MAX_PAGE_SIZE)
    page = max(number("page", 1), 1)
    return limit, (page - 1) * limit


def list_jobs(store: JobStore, where: JobFilter, limit: int, offset: int) -> tuple[list[Job], bool]:
    """A page of jobs, newest first, and whether there is a next page (one row more is read, no COUNT)."""
    query = select(Job).order_by(Job.submitted_at.desc(), Job.id.desc())
    if where.state:
        query = query.where(Job.status == where.state)
    if where.kind:
        query = query.where(Job.kind == where.kind)
    if where.group:
        query = query.where(Job.group_id == where.group)
    if where.queue:
        query = query.where(Job.queue == where.queue)
    if where.prompt:
        query = query.where(Job.params["prompt"].as_string().icontains(where.prompt, autoescape=True))
    with store.sessions() as session:
        rows = list(session.scalars(query.limit(limit + 1).offset(offset)))
    return rows[:limit], len(rows) > limit
