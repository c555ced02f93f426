"""Following a job until it finishes (the SQL store, or a server's events stream); a progress bar on a terminal."""
from __future__ import annotations

import sys

import click

from genq.client.visible import visible
from genq.core.polling import StillWaiting
from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus

EXIT_TIMEOUT = 3


class TerminalLine:
    """One line on stderr, redrawn in place when its text changes; nothing when stderr is not a terminal."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown and sys.stderr.isatty()
        self.text: str | None = None

    def show(self, text: str) -> None:
        if self.shown and text != self.text:
            click.echo("\r\033[K" + text, err=True, nl=False)
            self.text = text

    def end(self) -> None:
        if self.shown:
            click.echo("", err=True)


def wait_for(client, job_id: str, timeout: float | None, show_progress: bool = True) -> JobRow:
    """The job once it has finished (genq.api's Client follows it: the store, or a server's events);
    on timeout one line on stderr and exit 3."""
    line = TerminalLine(show_progress)

    def finished(row: JobRow) -> bool:
        return JobStatus(row.status).finished

    def show(row: JobRow) -> None:
        if not finished(row):
            line.show(visible(progress_line(row)))

    try:
        job = client.follow_job(job_id, timeout, on_change=show)
    except StillWaiting as exc:
        line.end()
        click.echo(f"job {job_id} is still {exc.last.status} after {timeout:g}s", err=True)
        raise SystemExit(EXIT_TIMEOUT) from None
    line.end()
    return job


def progress_line(job: JobRow, width: int = 30) -> str:
    if job.progress_total:
        filled = int(width * job.progress_done / job.progress_total)
        bar = "#" * filled + "-" * (width - filled)
        return f"{job.status} [{bar}] {job.progress_done}/{job.progress_total} {job.progress_message or ''}".rstrip()
    return f"{job.status} {job.progress_message or ''}".rstrip()
