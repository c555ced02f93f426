"""Following a job until it finishes, reading only the SQL store."""
from __future__ import annotations

import sys
import time

import click

from genq.client.visible import visible
from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus

POLL_INTERVAL_S = 0.5
EXIT_TIMEOUT = 3


def wait_for(store: JobStore, job_id: str, timeout: float | None, show_progress: bool = True) -> Job:
    deadline = None if timeout is None else time.monotonic() + timeout
    tty = show_progress and sys.stderr.isatty()
    last = None
    while True:
        job = store.get(job_id)
        if JobStatus(job.status).finished:
            if tty:
                click.echo("", err=True)
            return job
        if tty:
            line = visible(progress_line(job))
            if line != last:
                click.echo("\r\033[K" + line, err=True, nl=False)
                last = line
        if deadline is not None and time.monotonic() >= deadline:
            if tty:
                click.echo("", err=True)
            click.echo(f"job {job_id} is still {job.status} after {timeout:g}s", err=True)
            raise SystemExit(EXIT_TIMEOUT)
        time.sleep(POLL_INTERVAL_S)


def progress_line(job: Job, width: int = 30) -> str:
    if job.progress_total:
        filled = int(width * job.progress_done / job.progress_total)
        bar = "#" * filled + "-" * (width - filled)
        return f"{job.status} [{bar}] {job.progress_done}/{job.progress_total} {job.progress_message or ''}".rstrip()
    return f"{job.status} {job.progress_message or ''}".rstrip()
