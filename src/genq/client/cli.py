"""`client`: submit jobs, follow them, fetch their artifacts, run the single-machine setup."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from genq.client import local
from genq.client.local import UI_URL_PREFIX as UI_BANNER
from genq.client.download import DownloadRefused, download_artifacts
from genq.client.groups import group_command, group_summary, wait_for_group
from genq.client.login import login_command, logout_command
from genq.client.render import (artifact_summary, echo_json, job_summary, jobs_table, show_text, status_line,
                                workers_table)
from genq.client.runtime import Runtime, pass_runtime
from genq.client.submit import submit
from genq.client.users import users_command
from genq.client.visible import visible
from genq.client.waiting import wait_for
from genq.core.config import redact_url
from genq.core.kinds import KINDS
from genq.core.polling import poll_until
from genq.core.reads import JobFilter
from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus

STATUSES = [s.value for s in JobStatus]


LOCAL_ONLY = ("up", "down", "db", "users", "server", "ui")  # they need this machine's store, broker or processes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """genq: a batch job runner for generative-model work.

    Jobs go into SQL (the source of truth) and their ids to Redis; `genq-worker` processes run
    them. Configuration comes from GENQ_* environment variables: see `client config`. With
    GENQ_ADDRESS (and GENQ_TOKEN), or after `client login`, every job command goes through that
    genq server over HTTP instead.
    """
    if ctx.invoked_subcommand in LOCAL_ONLY:
        ctx.ensure_object(Runtime).local_only(f"{ctx.info_name} {ctx.invoked_subcommand}")


cli.add_command(submit)
cli.add_command(group_command)
cli.add_command(users_command)
cli.add_command(login_command)
cli.add_command(logout_command)


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@pass_runtime
def status(rt: Runtime, job: str, as_json: bool) -> None:
    """Print a job's status and progress."""
    found = rt.job(job)
    echo_json(job_summary(found)) if as_json else click.echo(status_line(found))


def job_or_group(job: str | None, group: str | None) -> None:
    if (job is None) == (group is None):
        raise click.UsageError("give a JOB or --group GROUP (one of them)")


@cli.command()
@click.argument("job", required=False)
@click.option("--group", "group_ref", metavar="GROUP", default=None, help="Wait for every job of a group (a sweep).")
@click.option("--timeout", type=float, default=None, help="Give up after S seconds (exit 3).")
@click.option("--json", "as_json", is_flag=True, help="Print the final job (or group) as a JSON object.")
@pass_runtime
def wait(rt: Runtime, job: str | None, group_ref: str | None, timeout: float | None, as_json: bool) -> None:
    """Wait for a job, or all jobs of a group, to finish. Exit 0 if all succeeded, 1 if any failed
    or was cancelled, 3 on timeout."""
    job_or_group(job, group_ref)
    if group_ref is not None:
        group = rt.group(group_ref)
        wait_for_group(group, timeout, show_progress=not as_json)
        summary = group_summary(group)
        if as_json:
            echo_json(summary)
        else:
            click.echo(visible(f"group {group.id}: " + ", ".join(f"{n} {s}" for s, n in summary["counts"].items())))
        raise SystemExit(0 if summary["counts"].get(JobStatus.SUCCEEDED.value, 0) == group.size else 1)
    found = wait_for(rt.client, rt.job(job).id, timeout, show_progress=not as_json)
    echo_json(job_summary(found)) if as_json else click.echo(status_line(found))
    raise SystemExit(0 if found.status == JobStatus.SUCCEEDED.value else 1)


@cli.command("list")
@click.option("--status", "status_filter", type=click.Choice(STATUSES), default=None)
@click.option("--kind", type=click.Choice(sorted(KINDS)), default=None)
@click.option("--group", "group_ref", metavar="GROUP", default=None,
              help="Only the jobs of this group, in the order of its sweep (every one of them unless --limit is given).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many jobs [default: 20].")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_jobs(rt: Runtime, status_filter, kind, group_ref, limit, as_json) -> None:
    """List recent jobs, newest first (a group's jobs in sweep order)."""
    group_id = rt.group(group_ref).id if group_ref is not None else None
    limit = limit or (None if group_id else 20)
    jobs = rt.reads.jobs(JobFilter(status=status_filter, kind=kind, group_id=group_id), limit)
    if as_json:
        echo_json([job_summary(j) for j in jobs])
        return
    names = {}
    for gid in dict.fromkeys(job.group_id for job in jobs if job.group_id):
        names[gid] = group.name if (group := rt.reads.group(gid)) is not None else None
    click.echo(jobs_table(jobs, names))


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def show(rt: Runtime, job: str, as_json: bool) -> None:
    """Everything about a job: params, status, timings, metrics, artifacts."""
    details = rt.job_details(rt.job(job))
    echo_json(details) if as_json else click.echo(show_text(details))


@cli.command()
@click.argument("job")
@click.option("--download", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy the artifacts into this folder.")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def artifacts(rt: Runtime, job: str, download: Path | None, as_json: bool) -> None:
    """List a job's artifacts (name, size, path), or copy them out with --download.

    A download reads each file from the store without following symbolic links, writes only inside
    DIR, and checks every copy against its recorded size and sha256 before any is put in place.
    """
    found = rt.job(job)
    rows = rt.reads.artifacts(found.id)
    items = [artifact_summary(a, rt.client.artifact_store) for a in rows]
    if download is not None:
        for item, target in zip(items, download_verified(rows, rt.client.artifact_store, download)):
            item["path"] = str(target)
    if as_json:
        echo_json(items)
        return
    for item in items:
        click.echo(visible(f"{item['name']:<28} {item['bytes']:>10} B  {item['path']}"))


def download_verified(rows, artifact_store, folder: Path) -> list[Path]:
    try:
        return download_artifacts(rows, artifact_store, folder)
    except DownloadRefused as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(visible(f"download into {folder} failed: {exc}")) from exc


@cli.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job finishes.")
@pass_runtime
def logs(rt: Runtime, job: str, follow: bool) -> None:
    """Print the job's own log lines."""
    found = rt.job(job)
    last_id = 0

    def print_new_lines() -> JobRow:
        nonlocal last_id
        now = rt.reads.get(found.id)  # read before the lines: every line of a job seen finished is printed
        while page := rt.reads.logs(found.id, after_id=last_id):
            for line in page:
                click.echo(visible(f"{line.at:%H:%M:%S} {line.level:<7} ") + visible(line.message, multiline=True))
            last_id = page[-1].id
        return now

    poll_until(print_new_lines, lambda now: not follow or JobStatus(now.status).finished, timeout=None)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Every worker run on record, not just the last day's.")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as a JSON list.")
@pass_runtime
def workers(rt: Runtime, show_all: bool, as_json: bool) -> None:
    """The fleet: each worker's state (idle, busy, stopped, or lost: silent past GENQ_LEASE), device,
    current job and its progress, jobs done and uptime. Live workers first."""
    summaries = rt.worker_summaries(show_all)
    echo_json(summaries) if as_json else click.echo(workers_table(summaries))


@cli.command()
@click.argument("job", required=False)
@click.option("--group", "group_ref", metavar="GROUP", default=None, help="Cancel every unfinished job of a group.")
@pass_runtime
def cancel(rt: Runtime, job: str | None, group_ref: str | None) -> None:
    """Cancel a job (or a group's jobs): a queued one never runs; a running one stops at its next epoch or step."""
    job_or_group(job, group_ref)
    if group_ref is not None:
        outcomes = rt.group(group_ref).cancel()
        for job_id, message in outcomes.items():
            click.echo(visible(f"{job_id}: {message}"))
        if not outcomes:
            click.echo("every job of the group had already finished")
        return
    job_id = rt.job(job).id
    cancelled = rt.client.lifecycle.cancel(job_id)
    click.echo(visible(f"{job}: {cancelled.message}"))
    for waiting in cancelled.failed_dependents:
        click.echo(f"{waiting}: failed, it waited for {job_id}")


@cli.group()
def db() -> None:
    """The SQL store's schema."""


@db.command()
def upgrade() -> None:
    """Create or migrate the database to this version's schema (Alembic)."""
    from genq.core.store.db import upgrade as run_upgrade

    settings = Runtime().settings
    try:
        before, after = run_upgrade(settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"upgrade of {redact_url(settings.database_url)} failed: {exc}") from exc
    click.echo(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def config(as_json: bool) -> None:
    """Print the settings in force (GENQ_* variables and their defaults)."""
    described = Runtime().settings.describe()
    if as_json:
        echo_json(described)
        return
    for key, value in described.items():
        click.echo(f"{key:<22} {value}")


@cli.command()
def up() -> None:
    """Single machine: migrate the database, start a broker if none answers, a worker and the server
    (the dashboard and the HTTP API, `client server`).

    GENQ_HOME is created 0700 and the SQLite store 0600. An embedded broker requires a generated
    password, kept in GENQ_HOME/broker/password (0600) and used by every genq command of this home.
    """
    from genq.core.store.db import upgrade as run_upgrade

    settings = Runtime().settings
    local.ensure_home(settings)
    run_upgrade(settings.database_url)
    try:
        click.echo(local.start_broker(settings))
        click.echo(local.start_worker(settings))
        click.echo(local.start_ui(settings))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
def down() -> None:
    """Stop what `client up` started (the dashboard and the worker first, then an embedded broker, whose password file goes).

    Only the processes `client up` recorded are signalled: a pid now used by another process is left alone.
    """
    settings = Runtime().settings
    click.echo(local.stop(settings, "ui"))
    click.echo(local.stop(settings, "worker"))
    click.echo(local.stop(settings, "broker"))
    if (forgotten := local.forget_broker_password(settings)) is not None:
        click.echo(forgotten)


def server_options(function):
    function = click.option("--port", type=click.IntRange(0, 65535), default=8265, show_default=True,
                            help="0: a free port.")(function)
    return click.option("--host", default="127.0.0.1", show_default=True,
                        help="The address to listen on; any but this machine's needs users "
                             "(`client users add`) or GENQ_UI_TOKEN.")(function)


@cli.command()
@server_options
def server(host: str, port: int) -> None:
    """Serve the HTTP API (/api, OpenAPI at /openapi.json, docs at /docs) and the web dashboard (/)
    from one process, over this installation's store, and print its URL.

    Every request must carry a token, on this machine too: `Authorization: Bearer TOKEN` with a
    user's token (`client users add`), who sees only their own jobs, or this home's token
    (GENQ_UI_TOKEN when set, else GENQ_HOME/ui/token, 0600, made on first need; the printed URL
    carries it once), which sees everything and is the dashboard's."""
    from genq.client.server.serve import serve

    Runtime().settings  # a bad GENQ_* value: one line, before the server starts
    serve(host, port)


@cli.command()
@server_options
def ui(host: str, port: int) -> None:
    """The same as `client server` (the dashboard and the HTTP API): its older name."""
    from genq.client.server.serve import serve

    Runtime().settings
    serve(host, port, banner=UI_BANNER)


@cli.group()
def models() -> None:
    """Stable Diffusion models."""


@models.command("make-tiny")
@click.argument("path", type=click.Path(path_type=Path))
def make_tiny(path: Path) -> None:
    """Write a tiny randomly initialised SD model (diffusers format) to PATH, for tests and demos."""
    from genq.core.sd.tiny import make_tiny_model

    written = make_tiny_model(path)
    click.echo(f"wrote a tiny random Stable Diffusion model to {written}")
    click.echo("its weights are random: its images are noise; use it to exercise the pipeline, not to look at")


def command_name() -> str:
    """`genq` when run as genq, else `client` (the same command under either name)."""
    return "genq" if Path(sys.argv[0]).name == "genq" else "client"


def main() -> None:
    """Errors are one line on stderr: exit 2 for bad usage or input, 1 for everything else."""
    from sqlalchemy.exc import OperationalError

    from genq.client.remote import RemoteError
    from genq.core.store.db import StoreUnreachable

    # A blip retried away is not the user's concern; what outlasts the retries is said once, below or by the command.
    logging.getLogger("genq.retry").setLevel(logging.ERROR)
    try:
        code = cli.main(prog_name=command_name(), standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        click.echo(f"Error: {visible(exc.format_message())}{hint}", err=True)
        raise SystemExit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {visible(exc.format_message())}", err=True)
        raise SystemExit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        raise SystemExit(1)
    except OperationalError as exc:  # still down after the retries (GENQ_RETRY_FOR) where a retry is safe
        reason = (str(exc.orig) or type(exc.orig).__name__).strip().splitlines()[0]
        click.echo(f"Error: the database did not answer: {visible(reason)}", err=True)
        raise SystemExit(1)
    except (StoreUnreachable, RemoteError) as exc:  # the store, or the server of a remote client, does not answer
        click.echo(f"Error: {visible(str(exc).strip().splitlines()[0])}", err=True)
        raise SystemExit(1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
