"""`/api/...` (the shapes `--json` prints), `/metrics`, artifacts and charts."""
from __future__ import annotations

import dataclasses
import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from genq.client.download import DownloadRefused, checked_name, open_source
from genq.client.groups import group_summary, report_figure_png
from genq.client.render import iso, job_details, job_summary, worker_summary
from genq.client.ui.figures import metric_chart_png
from genq.client.ui.metrics import metrics_text
from genq.client.ui.query_params import integer, job_filter, page_bounds
from genq.core.params import text_problem
from genq.core.reads import GroupNotFound, JobNotFound, Reads
from genq.core.store.artifacts import ArtifactNameError, validate_artifact_name

CHUNK = 1 << 16
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
LOG_LINES_PER_ANSWER = 1000
MAX_LOG_ID = 2**31 - 1  # a log line's id is an INTEGER column


def client_of(request: Request):
    return request.app.state.client


def reads_of(request: Request) -> Reads:
    return client_of(request).reads


def find_job(request: Request):
    ref = request.path_params["job_id"]
    if text_problem(ref):  # no job has such an id, and the store cannot compare it
        raise HTTPException(404, "no such job")
    try:
        return reads_of(request).resolve(ref)
    except JobNotFound:
        raise HTTPException(404, "no such job") from None


def find_group(request: Request):
    from genq.api import NotFound

    ref = request.path_params["group_id"]
    if text_problem(ref):
        raise HTTPException(404, "no such group")
    try:
        return client_of(request).group(ref)
    except NotFound:
        raise HTTPException(404, "no such group") from None


def ascii_json(value) -> Response:
    return Response(json.dumps(value, ensure_ascii=True), media_type="application/json")


def jobs_json(request: Request) -> Response:
    """The shapes `client list --json` prints."""
    return ascii_json([job_summary(job) for job in listed_jobs(request)])


def live_jobs_json(request: Request) -> Response:
    """What the jobs table redraws every second: the same jobs, each with when its preview was written."""
    return ascii_json([listed_job(job) for job in listed_jobs(request)])


def listed_jobs(request: Request):
    limit, offset = page_bounds(request.query_params)
    where = job_filter(request.query_params)
    if where.group_id:  # a name, an id or its prefix, as the CLI takes it
        try:
            where = dataclasses.replace(where, group_id=reads_of(request).resolve_group(where.group_id).id)
        except GroupNotFound:
            return []
    return reads_of(request).jobs(where, limit, offset)


def listed_job(job) -> dict:
    """A job as the dashboard's live rows need it: its summary, and when its preview was last written."""
    return {**job_summary(job), "preview_at": iso(job.preview_at)}


def job_json(request: Request) -> Response:
    client = client_of(request)
    return ascii_json(job_details(client.reads, find_job(request), client.artifact_store))


def job_status_json(request: Request) -> Response:
    return ascii_json(listed_job(find_job(request)))


def job_log_json(request: Request) -> Response:
    job = find_job(request)
    after = integer(request.query_params, "after", 0, 0, MAX_LOG_ID)
    lines = reads_of(request).logs(job.id, after, limit=LOG_LINES_PER_ANSWER)
    return ascii_json([{"id": line.id, "level": line.level, "message": line.message} for line in lines])


def group_json(request: Request) -> Response:
    return ascii_json(group_summary(find_group(request)))


def workers_json(request: Request) -> Response:
    return ascii_json([worker_summary(view) for view in worker_views(request)])


def worker_views(request: Request):
    client = client_of(request)
    return client.reads.workers(client.settings.lease_s)


def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics_text(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def artifact(request: Request) -> Response:
    """A file by job id and artifact name, looked up in the artifact index; the path is the index's."""
    row, source = open_artifact(client_of(request), find_job(request), request.path_params["name"])
    headers = {"Content-Length": str(row.size)}
    if row.media_type not in INLINE_TYPES:
        headers["Content-Disposition"] = f'attachment; filename="{row.name.rsplit("/", 1)[-1]}"'
    return StreamingResponse(read_chunks(source, row.size), media_type=row.media_type, headers=headers)


def open_artifact(client, job, name: str):
    """The job's artifact `name`: its index row and its bytes, opened from the store (the dashboard's and
    the API's downloads). 404 for a name that is not one, no such artifact, or a file the store lacks."""
    try:
        validate_artifact_name(name)
    except ArtifactNameError:
        raise HTTPException(404, "no such artifact") from None
    row = client.reads.artifact(job.id, name)
    if row is None:
        raise HTTPException(404, "no such artifact")
    store = client.artifact_store
    try:
        return row, open_source(store, row, checked_name(row, store))
    except DownloadRefused:
        raise HTTPException(404, "the artifact's file is missing or not a plain file in the store") from None


def read_chunks(source, size: int):
    """The recorded number of bytes, streamed from the store (never more than the Content-Length said)."""
    with source:
        left = size
        while left > 0 and (chunk := source.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


def metric_chart(request: Request) -> Response:
    job = find_job(request)
    name = request.path_params["metric"]
    points = [] if text_problem(name) else reads_of(request).metric_points(job.id, name)
    if not points:
        raise HTTPException(404, "no such metric")
    return Response(metric_chart_png(job.id, name, points), media_type="image/png")


def job_metrics_json(request: Request) -> Response:
    """{metric: [{"step", "value"}, ...]}: what the page's charts draw (the API's /api/jobs/ID/metrics, which
    answers first where the server mounts the dashboard)."""
    return ascii_json(metric_series(reads_of(request), find_job(request).id))


def metric_series(reads: Reads, job_id: str) -> dict[str, list[dict[str, float]]]:
    return {name: [{"step": step, "value": value} for step, value in points]
            for name, points in reads.metric_series(job_id).items()}


def compare_json(request: Request) -> Response:
    """Several jobs' metric series (?job=ID repeated): {"jobs": [{"id", "label", "metrics"}]}."""
    from genq.client.ui.pages import MAX_COMPARED

    reads = reads_of(request)
    ids = [ref for ref in request.query_params.getlist("job") if not text_problem(ref)][:MAX_COMPARED]
    jobs = reads.jobs_by_id(ids)
    return ascii_json({"jobs": [{"id": job.id, "label": job_label(job),
                                 "metrics": metric_series(reads, job.id)}
                                for job in jobs]})


def job_label(job) -> str:
    """A job in a legend: its id's start, and its swept values when it is one point of a sweep."""
    point = ", ".join(f"{key}={value}" for key, value in (job.group_point or {}).items())
    return job.id[:8] + (f" ({point})" if point else "")


def job_preview(request: Request) -> Response:
    job = find_job(request)
    png = reads_of(request).preview(job.id)
    if png is None:
        raise HTTPException(404, "this job has no preview")
    return Response(png, media_type="image/png")


def fleet_history_json(request: Request) -> Response:
    hours = integer(request.query_params, "hours", 3, 1, 48)
    history = reads_of(request).fleet_history(hours)
    return ascii_json({"bucket_s": history.bucket_s, "times": history.times, "queued": history.queued,
                       "finished": history.finished})


def group_figure(request: Request) -> Response:
    png = report_figure_png(find_group(request), request.path_params["name"])
    if png is None:
        raise HTTPException(404, "no such figure for this group (yet)")
    return Response(png, media_type="image/png")


def routes() -> list[Route]:
    return [
        Route("/api/jobs", jobs_json),
        Route("/api/live/jobs", live_jobs_json),
        Route("/api/jobs/{job_id}", job_json),
        Route("/api/jobs/{job_id}/status", job_status_json),
        Route("/api/jobs/{job_id}/log", job_log_json),
        Route("/api/jobs/{job_id}/metrics", job_metrics_json),
        Route("/api/compare", compare_json),
        Route("/api/fleet/history", fleet_history_json),
        Route("/api/groups/{group_id}", group_json),
        Route("/api/workers", workers_json),
        Route("/metrics", metrics),
        Route("/jobs/{job_id}/artifacts/{name:path}", artifact),
        Route("/jobs/{job_id}/charts/{metric}.png", metric_chart),
        Route("/jobs/{job_id}/preview.png", job_preview),
        Route("/groups/{group_id}/figures/{name}", group_figure),
    ]
