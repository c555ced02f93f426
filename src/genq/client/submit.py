"""`client submit KIND ...`: validate, store the job as queued, then send its id to the broker.

Each kind's command is generated from its declaration (genq.core.kinds): one option per
parameter, with its type, range, default and help text; validation and its messages are the
declaration's own. With --sweep (or --prompt-file) it submits one job per point, as one group.
Storing and sending are genq.api's: this module reads options and prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo

from genq.api import SweepPointError, run_options
from genq.client.render import echo_json, job_summary, status_line
from genq.client.runtime import Runtime
from genq.client.visible import visible
from genq.client.waiting import wait_for
from genq.core import sweeps
from genq.core.config import DEFAULT_PRIORITY
from genq.core.kinds import KIND_CLASSES
from genq.core.params import (MAX_RETRIES, JobParams, SpecError, parameter_base_type, parameter_choices, parse_duration,
                               range_text)
from genq.core.store.db import SchemaError
from genq.core.store.states import JobStatus
from genq.core.store.users import OverLimit


class Refused(click.ClickException):
    """A valid submit its owner's limits refuse: one line, exit 2, nothing stored."""

    exit_code = 2


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def cli_error(exc: SpecError) -> click.UsageError:
    """A SpecError as the command line says it: a parameter by its option (--num-images)."""
    text = f"{option_name(exc.field)}: {exc.reason}" if exc.field else exc.reason
    if isinstance(exc, SweepPointError):
        text = "sweep point " + ", ".join(f"{name}={value}" for name, value in exc.point.items()) + f": {text}"
    return click.UsageError(text)


def report_job(rt: Runtime, job, wait: bool, as_json: bool, timeout: float | None) -> None:
    """Print the submitted job (its id, or JSON); with --wait follow it. Exit 1 if it failed."""
    if job.unsent:
        click.echo(visible(f"warning: job {job.id} is stored but its wake-up was not sent ({job.unsent}); "
                           "a worker's reconciler sends it once it can"), err=True)
    from genq.core.retry import retrying

    row = retrying(lambda: rt.reads.get(job.id), rt.settings.retry_for_s, "reading the job")
    if wait:
        row = wait_for(rt.client, job.id, timeout, show_progress=not as_json)
    if as_json:
        echo_json(job_summary(row))
    elif wait:
        click.echo(status_line(row))
    else:
        click.echo(row.id)
    if row.status == JobStatus.FAILED.value:
        if not wait:
            click.echo(f"error: {visible(row.error)}", err=True)
        raise SystemExit(1)
    if wait and row.status != JobStatus.SUCCEEDED.value:
        raise SystemExit(1)


def report_group(rt: Runtime, group, wait: bool, as_json: bool, timeout: float | None) -> None:
    """Print the submitted group (its id, or JSON with its jobs); with --wait follow all of them."""
    from genq.client.groups import group_summary, wait_for_group

    if group.unsent:
        click.echo(visible(f"warning: group {group.id} is stored but its wake-ups were not sent ({group.unsent}); "
                           "a worker's reconciler sends them once it can"), err=True)
    if wait:
        wait_for_group(group, timeout, show_progress=not as_json)
    summary = group_summary(group)
    if as_json:
        echo_json(summary)
    elif wait:
        click.echo(f"group {group.id}: " + ", ".join(f"{n} {s}" for s, n in summary["counts"].items()))
    else:
        click.echo(group.id)
    if wait and summary["counts"].get(JobStatus.SUCCEEDED.value, 0) != group.size:
        raise SystemExit(1)


def common_options() -> list[click.Option]:
    return [
        click.Option(["--after"], metavar="JOB", default=None,
                     help="Start only after JOB succeeded (fail if it fails), like Slurm's afterok."),
        click.Option(["--wait"], is_flag=True, help="Wait for the job to finish; exit 0 only if it succeeded."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the job as a JSON object."),
        click.Option(["--timeout"], type=float, default=None, help="With --wait: give up waiting after S seconds (exit 3)."),
        click.Option(["--time-limit"], type=DURATION, default=None, metavar="DURATION",
                     help="Stop a run that takes longer (90s, 15m, 2h, 1h30m): the job ends failed with "
                          "'time limit exceeded'. Checked between epochs and denoising steps."),
        click.Option(["--retries"], type=int, default=0, show_default=True,
                     help=f"Run a failed job again up to N times ({MAX_RETRIES} at most), waiting "
                          "GENQ_RETRY_BACKOFF seconds, doubled each time."),
        click.Option(["--idempotency-key"], metavar="KEY", default=None,
                     help="Submitting the same KEY again returns the job it created, instead of a new one."),
        click.Option(["--queue"], metavar="NAME", default=None,
                     help="The queue to send the job to; workers take the queues of their --queues "
                          "(default: the kind's queue, GENQ_KIND_QUEUES, else GENQ_QUEUE, `gpu`)."),
        click.Option(["--priority"], type=click.IntRange(0, 9), default=DEFAULT_PRIORITY, show_default=True,
                     help="0..9: a higher priority starts before every queued job of lower priority on its queue."),
        click.Option(["--notify"], metavar="URL", default=None,
                     help="POST a signed JSON body to URL when the job ends (a sweep: each job, then the group); "
                          "its host must be in GENQ_WEBHOOK_ALLOW. Default: the user's (`client users set --notify`)."),
    ]


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def click_type(annotation: Any) -> click.ParamType:
    """The click type of a parameter's annotation (`X | None` is X)."""
    if choices := parameter_choices(annotation):
        return click.Choice(list(choices))
    return {int: click.INT, float: click.FLOAT, str: click.STRING}[parameter_base_type(annotation)]


def parameter_option(name: str, field: FieldInfo) -> click.Option:
    """One option of a kind's command, described by the declaration of its parameter. A required
    parameter is checked by the declaration, not by click: a sweep may give it instead."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    help_text = (field.description or "") + range_text(field)
    if field.is_required():
        help_text += " [required, or swept]"
    elif field.default is not None:
        help_text += f" [default: {field.default}]"
    return click.Option([option_name(name), name], type=click_type(field.annotation), default=None,
                        metavar=extra.get("metavar"), help=help_text)


def sweep_options(cls: type[JobParams]) -> list[click.Option]:
    options = [
        click.Option(["--sweep"], metavar="NAME=V1,V2,...", multiple=True,
                     help="Submit one job per value (NAME=A..B: the integers A to B); repeated, one job per "
                          "combination. The jobs form a group: its id is printed (see `client group`)."),
        click.Option(["--group-name"], metavar="NAME", default=None, help="A name for the sweep's group."),
        click.Option(["--yes"], is_flag=True, help="Submit a sweep larger than GENQ_MAX_SWEEP jobs."),
    ]
    if "prompt" in cls.model_fields:
        options.append(click.Option(["--prompt-file"], type=click.Path(dir_okay=False, path_type=Path),
                                    default=None, help="Sweep over prompts: one per line, `prompt | negative` "
                                                       "for a negative prompt; blank and # lines are skipped."))
    return options


def sweep_from_cli(cls: type[JobParams], values: dict[str, Any], texts: tuple[str, ...],
                   prompt_file: Path | None) -> sweeps.Sweep:
    """The sweep the options ask for; each swept value converted as its option converts it."""
    axes = []
    if prompt_file is not None:
        axes.append(("prompt", sweeps.read_prompt_file(prompt_file)))
    for text in texts:
        name, raw = sweeps.parse_sweep_option(text)
        if name not in cls.model_fields:
            raise sweeps.SweepError(f"{cls.kind} has no parameter {name!r} (it has: "
                                    f"{', '.join(n.replace('_', '-') for n in cls.model_fields)})")
        kind_type = click_type(cls.model_fields[name].annotation)
        try:
            axes.append((name, [kind_type.convert(value, None, None) for value in raw]))
        except click.BadParameter as exc:
            raise sweeps.SweepError(f"--sweep {name.replace('_', '-')}: {exc.message}") from None
    given = {name: value for name, value in values.items() if value is not None}
    if prompt_file is not None and "prompt" in given:
        raise sweeps.SweepError("give --prompt or --prompt-file, not both")
    return sweeps.build(given, axes)


def kind_command(cls: type[JobParams]) -> click.Command:
    def callback(after, wait, as_json, timeout, time_limit, retries, idempotency_key, queue, priority, notify,
                 sweep, group_name, yes, prompt_file=None, **values) -> None:
        rt = click.get_current_context().ensure_object(Runtime)
        try:
            if sweep or prompt_file is not None:
                plan = sweep_from_cli(cls, values, sweep, prompt_file)
                options = run_options(time_limit, retries, idempotency_key, queue, priority, notify, rt.settings,
                                      rt.client.webhook_hosts_checked_elsewhere)
                group = rt.client.submit_sweep(cls, plan, name=group_name, after=after, options=options,
                                               confirm=yes)
                return report_group(rt, group, wait, as_json, timeout)
            if group_name is not None:
                raise click.UsageError("--group-name names a sweep's group: add --sweep (or --prompt-file)")
            job = rt.client.submit(cls, after=after, time_limit=time_limit, retries=retries,
                                   idempotency_key=idempotency_key, queue=queue, priority=priority, notify=notify,
                                   **values)
        except sweeps.SweepError as exc:
            raise click.UsageError(str(exc)) from None
        except SpecError as exc:
            raise cli_error(exc) from None
        except SchemaError as exc:  # the store is opened once the input is valid
            raise click.ClickException(str(exc)) from None
        except OverLimit as exc:
            raise Refused(str(exc)) from None
        report_job(rt, job, wait, as_json, timeout)

    options = [parameter_option(name, field) for name, field in cls.model_fields.items()]
    return click.Command(cls.kind, callback=callback, params=options + common_options() + sweep_options(cls),
                         help=cls.__doc__, short_help=(cls.__doc__ or "").strip().splitlines()[0])


@click.group()
def submit() -> None:
    """Submit a job. The job id is printed; `client wait ID` follows it."""


for _cls in KIND_CLASSES:
    submit.add_command(kind_command(_cls))
