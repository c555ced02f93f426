"""The HTML pages: jobs, a job, a group, workers, submit."""
from __future__ import annotations

import dataclasses
import inspect
import json
from fnmatch import fnmatch
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from genq.client.groups import group_summary, report_figure_names
from genq.client.render import webhook_summary
from genq.client.ui.api import client_of, find_group, find_job, reads_of, worker_views
from genq.client.ui.results import natural_key, pictures, result_patterns, split_metrics
from genq.client.ui.forms import FieldError, form_fields, parse_form, prefill
from genq.client.ui.query_params import filter_query, job_filter, page_bounds
from genq.core.kinds import KINDS
from genq.core.params import SpecError, text_problem
from genq.core.reads import GroupNotFound, JobNotFound, JobPage
from genq.core.store.states import JobStatus

LOG_TAIL = 200
MAX_COMPARED = 24  # jobs on one compare page
MAX_GALLERY = 100  # pictures of a group's page
STATES = [s.value for s in JobStatus]


def render(request: Request, template: str, status_code: int = 200, **context) -> Response:
    context.update(request=request, csrf=request.app.state.csrf.token())
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status_code)


def jobs_page(request: Request) -> Response:
    where = job_filter(request.query_params)
    group, missing_group = resolve_group_filter(request, where.group_id)
    limit, offset = page_bounds(request.query_params)
    shown_where = dataclasses.replace(where, group_id=group.id) if group is not None else where
    listed = JobPage([], False) if missing_group else reads_of(request).page(shown_where, limit, offset)
    page = offset // limit + 1
    query = filter_query(shown_where)
    link = lambda number: "/?" + urlencode({**query, "page": number, "limit": limit})  # noqa: E731
    return render(request, "jobs.html", jobs=listed.jobs, where=where, states=STATES, kinds=sorted(KINDS), page=page,
                  group=group, missing_group=missing_group,
                  previous=link(page - 1) if page > 1 else None, next=link(page + 1) if listed.has_next else None,
                  api="/api/live/jobs?" + urlencode({**query, "page": page, "limit": limit}))


def resolve_group_filter(request: Request, ref: str | None):
    """?group= as the CLI takes it (a name, an id or an id's prefix): (the group, None), or (None, why not)."""
    if not ref:
        return None, None
    try:
        return reads_of(request).resolve_group(ref), None
    except GroupNotFound as exc:
        return None, str(exc)


def job_page(request: Request) -> Response:
    client = client_of(request)
    job = find_job(request)
    reads = client.reads
    artifacts = reads.artifacts(job.id)
    main, other_pictures = pictures(job.kind, artifacts, client.artifact_store)
    charts, number_names = split_metrics(reads.metric_names(job.id))
    numbers = {name: points[-1][1] for name in number_names if (points := reads.metric_points(job.id, name))}
    history = reads.history(job.id)
    log = reads.log_tail(job.id, LOG_TAIL)
    sd_settings = next((p.settings["parameters"] for p in main if "parameters" in p.settings), None)
    return render(request, "job.html", job=job, events=history.events, runs=history.runs,
                  main=main, other_pictures=other_pictures, sd_settings=sd_settings, charts=charts, numbers=numbers,
                  artifacts=artifacts, log=log, last_log_id=log[-1].id if log else 0,
                  finished=JobStatus(job.status).finished,
                  webhooks=[webhook_summary(*delivery) for delivery in reads.webhooks(job.id)])


def compare_page(request: Request) -> Response:
    """Jobs side by side (?job=ID, repeated, or ?group=NAME): parameters, results, and their curves overlaid."""
    reads = reads_of(request)
    refs = [ref for ref in request.query_params.getlist("job") if ref.strip()][:MAX_COMPARED]
    group, missing_group = resolve_group_filter(request, request.query_params.get("group"))
    if missing_group:
        raise HTTPException(404, missing_group)
    jobs = []
    for ref in refs:
        if text_problem(ref):
            raise HTTPException(400, "job: not text the store can compare")
        try:
            jobs.append(reads.resolve(ref))
        except JobNotFound as exc:
            raise HTTPException(404, str(exc)) from None
    if group is not None:
        jobs += reads.group_jobs(group.id)[:MAX_COMPARED]
    jobs = list({job.id: job for job in jobs}.values())[:MAX_COMPARED]
    params = sorted({key for job in jobs for key in job.params})
    results = sorted({key for job in jobs for key in (job.result or {}) if not isinstance(job.result[key], (dict, list))})
    differing = {key for key in params if len({json.dumps(job.params.get(key), sort_keys=True) for job in jobs}) > 1}
    names = sorted({name for job in jobs for name, _ in reads.metric_names(job.id)})
    return render(request, "compare.html", jobs=jobs, params=params, results=results, differing=differing,
                  group=group, metrics=names, series_api="/api/compare?" + urlencode([("job", job.id) for job in jobs]))


def cancel_job(request: Request) -> Response:
    job = find_job(request)
    client_of(request).job(job.id).cancel()
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def group_page(request: Request) -> Response:
    group = find_group(request)
    summary = group_summary(group)
    patterns = result_patterns(group.kind)[:1]
    gallery = []  # each finished job's first main result, for the lightbox
    if patterns:
        for row in group.rows()[:MAX_GALLERY]:
            found = [a for a in reads_of(request).artifacts(row.id) if fnmatch(a.name, patterns[0])]
            if found:
                gallery.append((row, sorted(found, key=lambda a: natural_key(a.name))[0]))
    return render(request, "group.html", group=summary, figures=report_figure_names(group), gallery=gallery,
                  columns=[c for c in (summary["jobs"][0] if summary["jobs"] else {}) if c != "id"])


def groups_page(request: Request) -> Response:
    limit, offset = page_bounds(request.query_params)
    overviews = reads_of(request).group_overviews(limit=limit + 1, offset=offset)
    page = offset // limit + 1
    return render(request, "groups.html", groups=overviews[:limit], page=page,
                  previous=f"/groups?page={page - 1}&limit={limit}" if page > 1 else None,
                  next=f"/groups?page={page + 1}&limit={limit}" if len(overviews) > limit else None)


def workers_page(request: Request) -> Response:
    from genq.client.render import worker_summary

    workers = [{**worker_summary(view), "last_seen_at": view.row.last_seen} for view in worker_views(request)]
    return render(request, "workers.html", workers=workers,
                  queues=reads_of(request).queue_counts())


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
    for name in KINDS[kind].model_fields:  # a field given in the address wins ("submit again with this seed")
        if (given := request.query_params.get(name)) is not None and not text_problem(given):
            values[name] = given
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
        Route("/groups", groups_page),
        Route("/groups/{group_id}", group_page),
        Route("/compare", compare_page),
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
