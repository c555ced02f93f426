"""The JSON API: `/api/...`, each answer the shape `client ... --json` prints.

Every route acts for the request's user (genq.client.server.auth): a user finds only their own jobs
and groups, and another's is answered 404 exactly as one that does not exist. Reads go through the
read model and changes through the engine, by way of genq.api's Client scoped to that user.
"""
from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from genq.api import Client, NotFound, OverLimit
from genq.client.groups import group_summary
from genq.client.render import artifact_summary, iso, job_details, job_summary, worker_summary
from genq.client.server.auth import Principal, principal
from genq.client.server.shapes import (Artifact, GroupCancelled, GroupListed, GroupSummary, JobCancelled, JobDetails,
                                       JobSummary, LogLine, MetricPoint, QueueView, WorkerSummary)
from genq.client.server.submissions import SubmitBody, invalid, request_body_schema, submit
from genq.client.ui.api import open_artifact, read_chunks
from genq.core.params import text_problem
from genq.core.reads import JobFilter, JobNotFound
from genq.core.store.states import JobStatus

MAX_PAGE_SIZE = 200
MAX_LOG_ID = 2**31 - 1  # a log line's id is an INTEGER column
LOG_LINES_PER_ANSWER = 1000
STATES = tuple(s.value for s in JobStatus)
StateName = Literal[STATES]  # type: ignore[valid-type]


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No token, an unknown one, or a revoked one."},
    404: {"model": Problem, "description": "No such job or group among those this user may see."},
}
router = APIRouter(prefix="/api", responses=ERRORS)


def acting_client(request: Request, who: Principal = Depends(principal)) -> Client:
    """genq.api's Client over the server's store, submitting as the request's user and seeing what they may."""
    return request.app.state.client.acting_as(who.name, sees_all=who.admin)


Acting = Annotated[Client, Depends(acting_client)]
JobId = Annotated[str, Path(description="A job's id, or a unique prefix of at least 4 characters.")]
GroupId = Annotated[str, Path(description="A group's id, a unique prefix of it, or its name.")]


def checked_text(name: str, value: str | None) -> str | None:
    if value is not None and (problem := text_problem(value)):
        raise invalid_query(name, problem)
    return value


def invalid_query(name: str, message: str):
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def find_job(client: Client, ref: str):
    if text_problem(ref):
        raise HTTPException(404, "no such job")
    try:
        return client.reads.resolve(ref, client.visible_owner)
    except JobNotFound:
        raise HTTPException(404, "no such job") from None


def find_group(client: Client, ref: str):
    if text_problem(ref):
        raise HTTPException(404, "no such group")
    try:
        return client.group(ref)
    except NotFound:
        raise HTTPException(404, "no such group") from None


# -- jobs ---------------------------------------------------------------------------------
@router.post("/jobs", status_code=201,
             responses={400: {"model": Problem, "description": "The body is not JSON."},
                        429: {"model": Problem, "description": "The user's max_queued would be passed: nothing stored."}},
             summary="Submit one job, or a sweep (one job per point, as one group)")
def submit_jobs(body: SubmitBody, client: Acting) -> JobSummary | GroupSummary:
    """The answer is the job as `client submit --json` prints it, or for a sweep its group as
    `client group --json` does. A bad value is a 422 whose message is the CLI's."""
    try:
        _, summary = submit(client, body)
    except OverLimit as exc:
        raise HTTPException(429, str(exc)) from None
    return summary


@router.get("/jobs", summary="List jobs, newest first (a group's in sweep order)")
def list_jobs(client: Acting,
              status: StateName | None = None,
              state: Annotated[StateName | None, Query(description="The same as status.")] = None,
              kind: str | None = None, group: str | None = None, queue: str | None = None,
              prompt: Annotated[str | None, Query(description="Any part of the prompt.", max_length=200)] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
              page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> list[JobSummary]:
    for name, value in (("kind", kind), ("group", group), ("queue", queue), ("prompt", prompt)):
        checked_text(name, value)
    group_id = find_group(client, group).id if group else None
    where = JobFilter(status=status or state, kind=kind, group_id=group_id, queue=queue, prompt=prompt,
                      owner=client.visible_owner)
    return [job_summary(job) for job in client.reads.jobs(where, limit, (page - 1) * limit)]


@router.get("/jobs/{job_id}", summary="Everything about a job (`client show --json`)", response_model=JobDetails)
def show_job(job_id: JobId, client: Acting) -> JSONResponse:
    """Its keys in the order `client show --json` prints them (a remote `client show` prints this)."""
    return JSONResponse(job_details(client.reads, find_job(client, job_id), client.artifact_store))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel_job(job_id: JobId, client: Acting) -> JobCancelled:
    """A queued job never runs (and what waits for it fails); a running one stops at its next step."""
    job = find_job(client, job_id)
    cancelled = client.lifecycle.cancel(job.id)
    return {"id": job.id, "status": cancelled.outcome.status.value, "message": cancelled.message,
            "failed_dependents": cancelled.failed_dependents}


@router.get("/jobs/{job_id}/metrics", summary="A job's metric series")
def job_metrics(job_id: JobId, client: Acting) -> dict[str, list[MetricPoint]]:
    job = find_job(client, job_id)
    return {name: [{"step": step, "value": value} for step, value in points]
            for name, points in client.reads.metric_series(job.id).items()}


@router.get("/jobs/{job_id}/logs", summary="A job's log lines after line `after` (for tailing)")
def job_logs(job_id: JobId, client: Acting,
             after: Annotated[int, Query(ge=0, le=MAX_LOG_ID, description="The id of the last line seen.")] = 0
             ) -> list[LogLine]:
    job = find_job(client, job_id)
    return [{"id": line.id, "at": iso(line.at), "level": line.level, "message": line.message, "attempt": line.attempt}
            for line in client.reads.logs(job.id, after, limit=LOG_LINES_PER_ANSWER)]


@router.get("/jobs/{job_id}/artifacts", summary="A job's artifacts (`client artifacts --json`)")
def job_artifacts(job_id: JobId, client: Acting) -> list[Artifact]:
    job = find_job(client, job_id)
    return [artifact_summary(a, client.artifact_store) for a in client.reads.artifacts(job.id)]


@router.get("/jobs/{job_id}/artifacts/{name:path}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The file, streamed; its recorded sha256 in `X-Genq-Sha256` and `Digest`."}},
            summary="Download one artifact")
def download_artifact(job_id: JobId, name: str, client: Acting) -> StreamingResponse:
    row, source = open_artifact(client, find_job(client, job_id), name)
    digest = base64.b64encode(bytes.fromhex(row.sha256)).decode()
    headers = {"Content-Length": str(row.size), "X-Genq-Sha256": row.sha256, "Digest": f"sha-256={digest}",
               "Content-Disposition": f'attachment; filename="{row.name.rsplit("/", 1)[-1]}"'}
    return StreamingResponse(read_chunks(source, row.size), media_type=row.media_type, headers=headers)


# -- groups --------------------------------------------------------------------------------
@router.get("/groups", summary="Groups (sweeps), newest first")
def list_groups(client: Acting, limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> list[GroupListed]:
    return [{"id": g.id, "name": g.name, "kind": g.kind, "size": g.size, "created_at": iso(g.created_at)}
            for g in client.reads.groups(client.visible_owner, limit, (page - 1) * limit)]


@router.get("/groups/{group_id}", summary="A group with its counts and table (`client group --json`)")
def show_group(group_id: GroupId, client: Acting) -> GroupSummary:
    return group_summary(find_group(client, group_id))


@router.post("/groups/{group_id}/cancel", summary="Cancel every unfinished job of a group")
def cancel_group(group_id: GroupId, client: Acting) -> GroupCancelled:
    group = find_group(client, group_id)
    return {"id": group.id, "jobs": group.cancel()}


# -- the fleet and the queue ---------------------------------------------------------------------
@router.get("/workers", summary="The workers (`client workers --json`)")
def list_workers(client: Acting, all: Annotated[bool, Query(description="Every worker run on record, not just "
                                                                         "the last day's (`--all`).")] = False
                 ) -> list[WorkerSummary]:
    """A job another user's worker runs is not named (its worker shows only that it is busy)."""
    summaries = [worker_summary(view) for view in client.reads.workers(client.settings.lease_s, include_all=all)]
    if client.visible_owner is not None:
        for summary in summaries:
            current = summary["current_job"] or (summary["progress"] or {}).get("id")
            if current is not None and (job := client.reads.get(current)) is not None and job.owner != client.owner:
                summary["current_job"] = summary["progress"] = None
    return summaries


@router.get("/queue", summary="The shared queue: everyone's counts, your own jobs' places")
def queue(client: Acting) -> QueueView:
    """Per queue, how many jobs are queued and running (everyone's, as counts only), and each of your
    queued jobs' position on its queue (1: the next to start there)."""
    counts = client.reads.queue_counts()
    return {"queues": [{"queue": name, **states} for name, states in counts.items()],
            "jobs": [{"id": place.job_id, "queue": place.queue, "priority": place.priority, "position": place.position}
                     for place in client.reads.queue_positions(client.owner)]}


def add_kinds_to_openapi(app) -> None:
    """POST /api/jobs's body in the OpenAPI schema: one alternative per kind, from its declaration."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            schema["paths"]["/api/jobs"]["post"]["requestBody"] = request_body_schema(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


__all__ = ["router", "add_kinds_to_openapi", "invalid"]
