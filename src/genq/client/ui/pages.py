"""The HTML pages: jobs, a job, a group, workers, submit."""
from __future__ import annotations

import inspect
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from genq.client.groups import group_summary, report_figure_names
from genq.client.render import duration, webhook_summary
from genq.client.ui.api import client_of, find_group, find_job, reads_of, worker_views
from genq.client.ui.figures import png_settings
from genq.client.ui.forms import FieldError, form_fields, parse_form, prefill
from genq.client.ui.query_params import filter_query, job_filter, page_bounds
from genq.core.kinds import KINDS
from genq.core.params import SpecError, text_problem
from genq.core.store.states import JobStatus

LOG_TAIL = 200
STATES = [s.value for s in JobStatus]


def render(request: Request, template: str, status_code: int = 200, **context) -> Response:
    context.update(request=request, csrf=request.app.state.csrf.token())
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status_code)


def jobs_page(request: Request) -> Response:
    where = job_filter(request.query_params)
    limit, offset = page_bounds(request.query_params)
    listed = reads_of(request).page(where, limit, offset)
    page = offset // limit + 1
    query = filter_query(where)
    link = lambda number: "/?" + urlencode({**query, "page": number, "limit": limit})  # noqa: E731
    return render(request, "jobs.html", jobs=listed.jobs, where=where, states=STATES, kinds=sorted(KINDS), page=page,
                  previous=link(page - 1) if page > 1 else None, next=link(page + 1) if listed.has_next else None,
                  api="/api/jobs?" + urlencode({**query, "page": page, "limit": limit}))


def job_page(request: Request) -> Response:
    client = client_of(request)
    job = find_job(request)
    reads = client.reads
    artifacts = []
    for row in reads.artifacts(job.id):
        image = row.media_type == "image/png"
        settings = png_settings(client.artifact_store, row) if image else {}
        artifacts.append({"row": row, "image": image, "settings": settings})
    history = reads.history(job.id)
    log = reads.log_tail(job.id, LOG_TAIL)
    return render(request, "job.html", job=job, events=history.events, runs=history.runs, took=duration(job),
                  metrics=reads.metric_names(job.id), artifacts=artifacts, log=log, last_log_id=log[-1].id if log else 0,
                  finished=JobStatus(job.status).finished,
                  webhooks=[webhook_summary(*delivery) for delivery in reads.webhooks(job.id)])


def cancel_job(request: Request) -> Response:
    job = find_job(request)
    client_of(request).job(job.id).cancel()
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def group_page(request: Request) -> Response:
    group = find_group(request)
    return render(request, "group.html", group=group_summary(group), figures=report_figure_names(group))


def workers_page(request: Request) -> Response:
    from genq.client.render import worker_summary

    return render(request, "workers.html", workers=[worker_summary(view) for view in worker_views(request)])


def submit_page(request: Request) -> Response:
    kind = request.query_params.get("kind") or next(iter(KINDS))
    if kind not in KINDS:
        raise HTTPException(404, "no such kind")
    values: dict[str, str] = {}
    if (source := request.query_params.get("from")) and not text_problem(source):
        job = reads_of(request).get(source)
        if job is not None and job.kind == kind:
            values = prefill(job.params)
            values.update(queue=job.queue, priority=str(job.priority))
    return submit_form(request, kind, values, {})


def submit_form(request: Request, kind: str, values: dict[str, str], errors: dict[str, str], status_code: int = 200):
    return render(request, "submit.html", status_code=status_code, kind=kind, kinds=sorted(KINDS),
                  fields=form_fields(KINDS[kind]), values=values, errors=errors)


async def submit_post(request: Request) -> Response:
    form = await request.form()
    kind = form.get("kind") or ""
    if kind not in KINDS:
        raise HTTPException(400, "no such kind")
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        params, options = parse_form(KINDS[kind], values)
        job = await run_sync(lambda: client_of(request).submit(kind, **options, **params))
    except FieldError as exc:
        return submit_form(request, kind, values, {exc.field: exc.reason}, 400)
    except SpecError as exc:
        shown = exc.field in KINDS[kind].model_fields or exc.field in ("queue", "priority")
        return submit_form(request, kind, values, {exc.field if shown else "_form": exc.reason}, 400)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


async def run_sync(function):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function)


def routes() -> list[Route]:
    return [
        Route("/", jobs_page),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/cancel", csrf_checked(cancel_job), methods=["POST"]),
        Route("/groups/{group_id}", group_page),
        Route("/workers", workers_page),
        Route("/submit", submit_page, methods=["GET"]),
        Route("/submit", csrf_checked(submit_post), methods=["POST"]),
    ]


def csrf_checked(endpoint):
    """The POST's form must carry this process's CSRF token, else 403 before the endpoint runs."""

    async def checked(request: Request) -> Response:
        form = await request.form()
        if not request.app.state.csrf.valid(form.get("csrf_token") if isinstance(form.get("csrf_token"), str) else None):
            return Response("missing or wrong CSRF token", status_code=403, media_type="text/plain")
        if inspect.iscoroutinefunction(endpoint):
            return await endpoint(request)
        return await run_sync(lambda: endpoint(request))
    return checked
