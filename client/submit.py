"""`client submit KIND ...`: validate, store the job as queued, then send its id to the broker.

Each kind's command is generated from its declaration (genq.core.kinds): one option per
parameter, with its type, range, default and help text; validation and its messages are the
declaration's own.
"""
from __future__ import annotations

import types
import typing
from typing import Any

import annotated_types
import click
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from genq.client.render import echo_json, job_summary, status_line
from genq.client.runtime import Runtime
from genq.client.visible import visible
from genq.client.waiting import wait_for
from genq.core.kinds import KIND_CLASSES
from genq.core.params import MAX_RETRIES, JobParams, RunOptions, SpecError, parse, parse_duration, spec_error
from genq.core.store.states import JobStatus


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def build_params(rt: Runtime, cls: type[JobParams], values: dict[str, Any]) -> JobParams:
    try:
        return parse(cls, values, rt.settings)
    except SpecError as exc:
        where = f"{option_name(exc.field)}: " if exc.field in cls.model_fields else ""
        raise click.UsageError(f"{where}{exc.reason}") from None


def resolve_job(rt: Runtime, ref: str, option: str, required_kind: str | None = None) -> str:
    try:
        job = rt.store.resolve(ref)
    except LookupError as exc:
        raise click.UsageError(f"{option}: {exc.args[0]}") from None
    if required_kind and job.kind != required_kind:
        raise click.UsageError(f"{option} {ref} is a {job.kind} job, not a {required_kind} job")
    return job.id


def submit_params(rt: Runtime, cls: type[JobParams], values: dict[str, Any], after: str | None) -> tuple[JobParams, str | None]:
    """Validated parameters with job references made full ids and a seed chosen, and the job to wait for."""
    params = build_params(rt, cls, {name: value for name, value in values.items() if value is not None})
    waits_for = resolve_job(rt, after, "--after") if after is not None else None
    for name, kind in cls.job_refs().items():
        ref_id = resolve_job(rt, getattr(params, name), option_name(name), kind)
        if waits_for is not None and waits_for != ref_id:
            raise click.UsageError(f"--after must be the {option_name(name)} job for this kind (it already waits for it)")
        params, waits_for = params.replace(**{name: ref_id}), ref_id
    return params.with_seed(), waits_for


def enqueue(rt: Runtime, spec: JobParams, after: str | None, wait: bool, as_json: bool, timeout: float | None,
            options: RunOptions | None = None) -> None:
    from genq.worker import dependencies

    store = rt.store
    job, not_sent = dependencies.submit(rt.app, store, spec, depends_on=after, retry_for_s=rt.settings.retry_for_s,
                                        options=options)
    if not_sent:
        click.echo(visible(f"warning: job {job.id} is stored but its wake-up was not sent ({not_sent}); "
                           "a worker sends it once the broker answers"), err=True)
    job = store.get(job.id)
    if wait:
        job = wait_for(store, job.id, timeout, show_progress=not as_json)
    if as_json:
        echo_json(job_summary(job))
    elif wait:
        click.echo(status_line(job))
    else:
        click.echo(job.id)
    if job.status == JobStatus.FAILED.value:
        if not wait:
            click.echo(f"error: {visible(job.error)}", err=True)
        raise SystemExit(1)
    if wait and job.status != JobStatus.SUCCEEDED.value:
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


def run_options(time_limit: float | None, retries: int, idempotency_key: str | None) -> RunOptions:
    try:
        return RunOptions.model_validate({"time_limit_s": time_limit, "retries": retries,
                                          "idempotency_key": idempotency_key})
    except ValidationError as exc:
        error = spec_error(exc)
        option = {"time_limit_s": "--time-limit", "retries": "--retries", "idempotency_key": "--idempotency-key"}
        raise click.UsageError(f"{option.get(error.field, '')}: {error.reason}") from None


def click_type(annotation: Any) -> click.ParamType:
    """The click type of a parameter's annotation (`X | None` is X)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(choice) for choice in typing.get_args(annotation)])
    return {int: click.INT, float: click.FLOAT, str: click.STRING}[annotation]


def range_text(field: FieldInfo) -> str:
    low = high = multiple = None
    for rule in field.metadata:
        if isinstance(rule, (annotated_types.Ge, annotated_types.Gt)):
            low = f"{rule.ge}" if isinstance(rule, annotated_types.Ge) else f">{rule.gt}"
        elif isinstance(rule, (annotated_types.Le, annotated_types.Lt)):
            high = f"{rule.le}" if isinstance(rule, annotated_types.Le) else f"<{rule.lt}"
        elif isinstance(rule, annotated_types.MultipleOf):
            multiple = rule.multiple_of
    parts = []
    if low is not None or high is not None:
        parts.append(f"{low or ''}..{high or ''}")
    if multiple is not None:
        parts.append(f"multiple of {multiple}")
    return f" [{', '.join(parts)}]" if parts else ""


def parameter_option(name: str, field: FieldInfo) -> click.Option:
    """One option of a kind's command, described by the declaration of its parameter."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    help_text = (field.description or "") + range_text(field)
    if not field.is_required() and field.default is not None:
        help_text += f" [default: {field.default}]"
    return click.Option([option_name(name), name], type=click_type(field.annotation), default=None,
                        required=field.is_required(), metavar=extra.get("metavar"), help=help_text)


def kind_command(cls: type[JobParams]) -> click.Command:
    def callback(after, wait, as_json, timeout, time_limit, retries, idempotency_key, **values) -> None:
        rt = click.get_current_context().ensure_object(Runtime)
        options = run_options(time_limit, retries, idempotency_key)
        params, waits_for = submit_params(rt, cls, values, after)
        enqueue(rt, params, waits_for, wait, as_json, timeout, options)

    options = [parameter_option(name, field) for name, field in cls.model_fields.items()]
    return click.Command(cls.kind, callback=callback, params=options + common_options(),
                         help=cls.__doc__, short_help=(cls.__doc__ or "").strip().splitlines()[0])


@click.group()
def submit() -> None:
    """Submit a job. The job id is printed; `client wait ID` follows it."""


for _cls in KIND_CLASSES:
    submit.add_command(kind_command(_cls))
