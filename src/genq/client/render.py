"""How jobs look on the terminal and in --json."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click

from genq.client.visible import visible
from genq.core.config import redact_url
from genq.core.reads import Reads, Run
from genq.core.store.clock import as_utc
from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus


def iso(moment: datetime | None) -> str | None:
    moment = as_utc(moment)
    return None if moment is None else moment.isoformat()


def job_summary(job: JobRow) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "params": job.params, "result": job.result,
        "error": job.error, "attempts": job.attempts, "worker": job.worker_host, "depends_on": job.depends_on,
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "heartbeat_at": iso(job.heartbeat_at),
        "lease_until": iso(job.lease_until), "queue": job.queue, "priority": job.priority,
        "group": job.group_id, "group_point": job.group_point,
        "progress": {"done": job.progress_done, "total": job.progress_total, "message": job.progress_message},
    }


def job_details(reads: Reads, job: JobRow, artifact_store) -> dict[str, Any]:
    details = job_summary(job)
    details["metrics"] = {name: [{"step": step, "value": value} for step, value in points]
                          for name, points in reads.metric_series(job.id).items()}
    details["took"] = duration(job)
    details["artifacts"] = [artifact_summary(a, artifact_store) for a in reads.artifacts(job.id)]
    history = reads.history(job.id)
    details["events"] = [{"at": iso(e.at), "from": e.from_status, "to": e.to_status, "worker": e.worker,
                          "device": e.device, "reason": e.reason} for e in history.events]
    details["runs"] = [run_summary(run) for run in history.runs]
    details["webhooks"] = [webhook_summary(delivery, attempts) for delivery, attempts in reads.webhooks(job.id)]
    return details


def webhook_summary(delivery, attempts) -> dict[str, Any]:
    """A webhook delivery (its URL without a password) and every attempt: when, and the HTTP status or error."""
    return {"id": delivery.id, "url": redact_url(delivery.url), "state": delivery.state,
            "delivered_at": iso(delivery.delivered_at),
            "next_attempt_at": iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
            "attempts": [{"at": iso(a.at), "http_status": a.http_status, "error": a.error} for a in attempts]}


def run_summary(run: Run) -> dict[str, Any]:
    return {"attempt": run.attempt, "worker": run.worker, "device": run.device, "started_at": iso(run.started_at),
            "ended_at": iso(run.ended_at), "ended": run.ended, "batch": run.batch}


def artifact_summary(artifact, artifact_store) -> dict[str, Any]:
    """One artifact as listings show it; its path is a local path, or a URL (s3://...) in an object store."""
    return {"name": artifact.name, "path": artifact_store.url(artifact.relative_path),
            "media_type": artifact.media_type, "bytes": artifact.size, "sha256": artifact.sha256}


def echo_json(value: Any) -> None:
    # ensure_ascii writes control and bidi characters as \u001b, \u202e: the JSON stays valid and inert
    click.echo(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=True))


def duration(job: JobRow) -> str:
    if job.started_at is None:
        return "-"
    start = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=timezone.utc)
    end = job.finished_at or datetime.now(timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    return f"{(end - start).total_seconds():.1f}s"


def status_line(job: JobRow) -> str:
    line = f"{job.id}  {job.kind:<11} {job.status:<9}"
    if job.progress_total:
        line += f" {job.progress_done}/{job.progress_total}"
    if job.progress_message:
        line += f"  {job.progress_message}"
    if job.status == "waiting" and job.depends_on:
        line += f"  (waits for {job.depends_on})"
    lines = [line]
    if job.error:
        lines.append(f"  error: {job.error}")
    return "\n".join(visible(each) for each in lines)


def show_text(details: dict[str, Any]) -> str:
    lines = [f"job       {details['id']}", f"kind      {details['kind']}", f"status    {details['status']}"]
    if details["depends_on"]:
        lines.append(f"after     {details['depends_on']}")
    if details.get("group"):
        point = ", ".join(f"{k}={v}" for k, v in (details["group_point"] or {}).items())
        lines.append(f"group     {details['group']}  ({point})")
    if details["error"]:
        lines.append(f"error     {details['error']}")
    lines.append(f"queue     {details['queue']}  priority {details['priority']}")
    lines.append(f"attempts  {details['attempts']}  worker {details['worker'] or '-'}")
    for run in details["runs"]:
        lines.append(f"  #{run['attempt']} {run['worker'] or '-'} on {run['device'] or '?'}  {run['started_at']}"
                     f" -> {run['ended'] or 'running'}" + (f"  ({run['batch']})" if run["batch"] else ""))
    for key in ("submitted_at", "started_at", "finished_at"):
        lines.append(f"{key.replace('_at', ''):<9} {details[key] or '-'}")
    lines.append(f"took      {details['took']}")
    progress = details["progress"]
    if progress["total"]:
        lines.append(f"progress  {progress['done']}/{progress['total']}  {progress['message'] or ''}".rstrip())
    lines.append("params")
    lines += [f"  {k:<14} {v}" for k, v in details["params"].items()]
    if details["result"]:
        lines.append("result")
        lines += [f"  {k:<14} {json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in details["result"].items()]
    if details["metrics"]:
        lines.append("metrics")
        for name, points in details["metrics"].items():
            values = ", ".join(f"{p['step']}: {p['value']:.4g}" for p in points)
            lines.append(f"  {name:<24} {values}")
    if details["artifacts"]:
        lines.append("artifacts")
        lines += [f"  {a['name']:<28} {a['bytes']:>10} B  {a['path']}" for a in details["artifacts"]]
    for hook in details.get("webhooks", []):
        lines.append(f"webhook   {hook['url']}  {hook['state']}  (delivery {hook['id']})")
        lines += [f"  {a['at']}  {a['http_status'] or a['error']}" for a in hook["attempts"]]
    return "\n".join(visible(line) for line in lines)


def worker_summary(view) -> dict[str, Any]:
    row = view.row
    return {"name": row.name, "state": view.state.value, "host": row.host, "pid": row.pid, "device": row.device,
            "device_name": row.device_name, "device_memory": row.device_memory, "queues": row.queues,
            "current_job": row.current_job if view.state.value in ("busy", "lost") else None, "progress": view.job_progress,
            "jobs_done": row.jobs_done, "started_at": iso(row.started_at), "last_seen": iso(row.last_seen),
            "uptime_s": round(view.uptime_s, 1), "versions": row.versions,
            "gpu_utilization": row.gpu_utilization, "gpu_memory_used": row.gpu_memory_used}


def workers_table(summaries: list[dict[str, Any]]) -> str:
    if not summaries:
        return "no workers have registered (start one with `genq-worker`, or `client up`)"
    lines = [f"{'NAME':<24} {'STATE':<8} {'DEVICE':<26} {'JOBS':>5} {'UPTIME':>8}  CURRENT JOB"]
    for w in summaries:
        device = w["device"] + (f" {w['device_name']}" if w["device"].startswith("cuda") and w["device_name"] else "")
        job = "-"
        if w["progress"]:
            p = w["progress"]
            job = f"{p['id'][:8]} {p['kind']}" + (f" {p['done']}/{p['total']}" if p["total"] else "")
        lines.append(f"{w['name']:<24} {w['state']:<8} {device[:26]:<26} {w['jobs_done']:>5} "
                     f"{_age(w['uptime_s']):>8}  {job}")
    return "\n".join(visible(line) for line in lines)


GROUP_CELL = 20  # a group's name is cut to this many characters in `client list`


def group_label(group_id: str | None, name: str | None) -> str:
    """A job's group in `client list`: its name, else the first 8 characters of its id, else "-"."""
    if group_id is None:
        return "-"
    if not name:
        return group_id[:8]
    name = visible(name)
    return name if len(name) <= GROUP_CELL else name[:GROUP_CELL - 1] + "…"


def run_time(job: JobRow, now: datetime | None = None) -> str:
    """How long a job ran: so far while running, its run when finished, "-" before it ran (queued,
    waiting, or ended without running)."""
    status = JobStatus(job.status)
    started = as_utc(job.started_at)
    if started is None or not (status is JobStatus.RUNNING or status.finished):
        return "-"
    end = as_utc(job.finished_at) if status.finished else (now or datetime.now(timezone.utc))
    if end is None:
        return "-"
    seconds = max((end - started).total_seconds(), 0.0)
    return f"{seconds:.1f}s" if seconds < 60 else _age(seconds)


def jobs_table(jobs: list[JobRow], group_names: dict[str, str | None], now: datetime | None = None) -> str:
    """`client list`: a header line and one aligned line per job (`group_names`: group id -> its name)."""
    if not jobs:
        return "no jobs"
    header = ("ID", "KIND", "STATUS", "GROUP", "SUBMITTED", "DURATION")
    rows = [(job.id, job.kind, job.status, group_label(job.group_id, group_names.get(job.group_id or "")),
             f"{job.submitted_at:%Y-%m-%d %H:%M:%S}", run_time(job, now)) for job in jobs]
    rows = [tuple(visible(cell) for cell in row) for row in rows]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    lines = []
    for line in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths)]
        lines.append("  ".join([*cells, line[-1].rjust(widths[-1])]))
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
