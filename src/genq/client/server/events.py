"""`GET /api/events`: server-sent events of jobs' state changes and progress, so nobody polls.

The server polls the read model (one query for new transitions, one for running jobs' progress,
every POLL_INTERVAL_S) and streams what changed, for the request's user's jobs only (an admin's:
everyone's), or one job's (`job=`) or one group's (`group=`). Events:

- `state`: {"job", "from", "to", "at", "reason"}, with the transition's id as the event id (send it
  back as `Last-Event-ID` to resume after it);
- `progress`: {"job", "done", "total", "message"} when a running job's progress moves;
- `end`: {"job" or "group", "status" or "counts"} once the one job, or every job of the group, has
  finished; the stream then closes.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from genq.client.render import iso
from genq.client.server.routes import ERRORS, Acting, find_group, find_job
from genq.core.reads import JobFilter
from genq.core.store.states import JobStatus

POLL_INTERVAL_S = 0.5
RUNNING_PAGE = 500  # running jobs whose progress one pass looks at
TRANSITIONS_PAGE = 500  # transitions one pass sends at most

router = APIRouter(prefix="/api", responses=ERRORS)


@dataclass(frozen=True)
class Watched:
    job_id: str | None
    group_id: str | None


def watched_target(client: Acting,
                   job: Annotated[str | None, Query(description="Only this job (id or prefix).")] = None,
                   group: Annotated[str | None, Query(description="Only this group's jobs (id, prefix or name).")] = None
                   ) -> Watched:
    """The job or group asked for, found (or 404) before the stream starts."""
    return Watched(find_job(client, job).id if job else None, find_group(client, group).id if group else None)


@router.get("/events", response_class=EventSourceResponse, summary="A stream of state changes and progress")
async def events(client: Acting, target: Annotated[Watched, Depends(watched_target)],
                 last_event_id: Annotated[str | None, Header(description="Resume after this event id.")] = None
                 ) -> AsyncIterator[ServerSentEvent]:
    owner = client.visible_owner
    job_id, group_id = target.job_id, target.group_id
    reads = client.reads
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None

    def watched() -> list:
        if job_id is not None:
            return [row for row in [reads.get(job_id)] if row is not None]
        return reads.jobs(JobFilter(group_id=group_id, owner=owner,
                                    status=None if group_id else JobStatus.RUNNING.value),
                          None if group_id else RUNNING_PAGE)

    if after is None:
        after = await run_in_threadpool(reads.last_transition_id)
        for row in await run_in_threadpool(watched):  # where they are now, then what changes
            yield ServerSentEvent(event="state", data={"job": row.id, "from": None, "to": row.status, "at": None,
                                                       "reason": "now"})
    progress: dict[str, tuple] = {}
    while True:
        rows = await run_in_threadpool(watched)  # read before the transitions: any end they show is among those
        changes = await run_in_threadpool(reads.transitions_after, after, owner, job_id, group_id, TRANSITIONS_PAGE)
        for change in changes:
            after = change.id
            yield ServerSentEvent(event="state", id=str(change.id),
                                  data={"job": change.job_id, "from": change.from_status, "to": change.to_status,
                                        "at": iso(change.at), "reason": change.reason})
        for row in rows:
            now = (row.progress_done, row.progress_total, row.progress_message)
            if row.status == JobStatus.RUNNING.value and progress.get(row.id) != now:
                progress[row.id] = now
                yield ServerSentEvent(event="progress", data={"job": row.id, "done": now[0], "total": now[1],
                                                              "message": now[2]})
        if len(changes) < TRANSITIONS_PAGE and (ended := end_of(job_id, group_id, rows)) is not None:
            yield ServerSentEvent(event="end", data=ended)
            return
        await asyncio.sleep(POLL_INTERVAL_S)


def end_of(job_id: str | None, group_id: str | None, rows: list) -> dict[str, Any] | None:
    """The `end` event once the watched job, or every job of the watched group, has finished."""
    if job_id is None and group_id is None:
        return None
    if not rows or not all(JobStatus(row.status).finished for row in rows):
        return None
    if job_id is not None:
        return {"job": job_id, "status": rows[0].status}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return {"group": group_id, "counts": dict(sorted(counts.items()))}
