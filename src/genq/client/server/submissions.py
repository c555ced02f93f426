"""`POST /api/jobs`: one job or a sweep, as JSON, validated by the same declarations and messages as the CLI.

The body is read loosely (`SubmitBody`) and then checked by genq.api exactly as `client submit` checks
it, so a bad value is the CLI's message (422, with the field). The OpenAPI schema of the body is
more precise: one alternative per kind, its `params` the kind's own pydantic declaration.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, create_model

from genq.api import Client
from genq.client.groups import group_summary
from genq.client.render import job_summary
from genq.core import sweeps
from genq.core.config import DEFAULT_PRIORITY
from genq.core.kinds import KIND_CLASSES, kind_class
from genq.core.params import MAX_RETRIES, JobParams, SpecError, parse_duration


class SubmitOptions(BaseModel):
    """How the job (or every job of the sweep) runs: the options every `client submit` has."""

    model_config = ConfigDict(extra="forbid")

    sweep: dict[str, list[Any]] | None = Field(
        None, description="Parameter -> values: one job per point of their product (the first varies slowest), "
                          "all in one group. A swept parameter is left out of `params`.")
    group_name: str | None = Field(None, description="A name for the sweep's group.")
    confirm: bool = Field(False, description="Allow a sweep of more than GENQ_MAX_SWEEP jobs (`--yes`).")
    after: str | None = Field(None, description="Start only after this job (id or prefix) succeeded.")
    time_limit: float | str | None = Field(None, description="Seconds, or a duration such as 90s, 15m, 1h30m: "
                                                             "a longer run ends failed.")
    retries: int = Field(0, description=f"Run a failed job again up to this many times (0-{MAX_RETRIES}).")
    idempotency_key: str | None = Field(None, description="The same key again returns the job it created.")
    queue: str | None = Field(None, description="The queue (default: the kind's).")
    priority: int = Field(DEFAULT_PRIORITY, description="0-9: higher starts first on its queue.")
    notify: str | None = Field(None, description="A webhook URL POSTed (signed) when the job ends, or for a sweep "
                                                 "each job and then the group; its host must be in GENQ_WEBHOOK_ALLOW.")


class SubmitBody(SubmitOptions):
    """What the server reads; the kind's declaration checks `params` afterwards."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


def documented_body(cls: type[JobParams]) -> type[BaseModel]:
    """The body of a submit of `cls`'s kind, for the OpenAPI schema: its params are the kind's declaration."""
    return create_model(f"Submit_{cls.__name__}", __base__=SubmitOptions, __doc__=f"Submit a {cls.kind} job.",
                        kind=(Literal[cls.kind], ...), params=(cls, ...))


def request_body_schema(components: dict[str, Any]) -> dict[str, Any]:
    """The request body of POST /api/jobs: one of the kinds' bodies, by `kind`. Their schemas (and the
    kinds' declarations they refer to) are added to `components`."""
    alternatives, mapping = [], {}
    for cls in KIND_CLASSES:
        model = documented_body(cls)
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        reference = f"#/components/schemas/{model.__name__}"
        alternatives.append({"$ref": reference})
        mapping[cls.kind] = reference
    return {"required": True, "content": {"application/json": {"schema": {
        "oneOf": alternatives, "discriminator": {"propertyName": "kind", "mapping": mapping}}}}}


def invalid(location: tuple[str, ...], message: str, error: SpecError | None = None) -> RequestValidationError:
    """A 422 in FastAPI's own shape, with the CLI's message for the field; for a SpecError its parts in
    `ctx` (reason, field, and a sweep point's values), from which a remote client says what the CLI says."""
    detail: dict[str, Any] = {"loc": ("body", *location), "msg": message, "type": "value_error"}
    if error is not None:
        detail["ctx"] = {"reason": error.reason, "field": error.field, "point": getattr(error, "point", None)}
    return RequestValidationError([detail])


def submit(client: Client, body: SubmitBody) -> tuple[str, dict[str, Any]]:
    """Store the job or sweep the body asks for: ("job" or "group", what `--json` prints)."""
    from genq.api import run_options

    try:
        cls = kind_class(body.kind)
    except SpecError as exc:
        raise invalid(("kind",), exc.reason) from None
    try:
        time_limit = parse_duration(body.time_limit) if isinstance(body.time_limit, str) else body.time_limit
    except ValueError as exc:
        raise invalid(("time_limit",), str(exc)) from None
    try:
        options = run_options(time_limit, body.retries, body.idempotency_key, body.queue, body.priority, body.notify,
                              client.settings)
        if body.sweep:
            plan = sweeps.build(body.params, list(body.sweep.items()))
            group = client.submit_sweep(cls, plan, name=body.group_name, after=body.after, options=options,
                                        confirm=body.confirm)
            return "group", group_summary(group)
        if body.group_name is not None:
            raise invalid(("group_name",), "names a sweep's group: add `sweep`")
        job = client.submit_params(cls, body.params, after=body.after, options=options)
    except sweeps.SweepError as exc:
        raise invalid(("sweep",), str(exc)) from None
    except SpecError as exc:
        raise invalid(field_location(cls, exc.field), str(exc), exc) from None
    return "job", job_summary(job.row())


def field_location(cls: type[JobParams], field: str | None) -> tuple[str, ...]:
    if field is None:
        return ("params",)
    return ("params", field) if field in cls.model_fields else (field,)
