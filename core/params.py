"""What every job kind's declaration is built on: a frozen pydantic model of its parameters.

A kind subclasses `JobParams`, sets `kind` and `run_function`, and declares each parameter once
with its type, default, range and help text. Everything else is generated from that: the CLI's
options and `--help` (genq.client.submit), validation and its one-line messages, and the JSON
stored with the job. Numbers are finite (no inf or NaN) and strict (no "3" for an int).
"""
from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genq.core.config import DEFAULT_PRIORITY, QUEUE_NAME, Settings, load_settings

MAX_SEED = 2**32 - 1
MAX_JOB_ID_LENGTH = 64
MAX_TIME_LIMIT_S = 30 * 24 * 3600
MAX_RETRIES = 10

Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED,
                                   description="RNG seed; same seed, same result (random and recorded when omitted).")]


def job_ref(kind: str, description: str) -> Any:
    """A parameter naming another job of `kind`: the job waits for it, and the CLI resolves id prefixes."""
    return Field(min_length=1, max_length=MAX_JOB_ID_LENGTH, description=description,
                 json_schema_extra={"job_kind": kind, "metavar": "JOB"})


class RunOptions(BaseModel):
    """How a job of any kind is run: its queue and priority, time limit, retries of failed runs, and idempotency."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    time_limit_s: float | None = Field(None, gt=0, le=MAX_TIME_LIMIT_S)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    queue: str | None = Field(None, pattern=QUEUE_NAME.pattern)  # None: the kind's default queue (Settings.queue_for)
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9)  # higher runs first


DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "15m", "2h" or "1h30m"; ValueError otherwise."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h or 1h30m")
    parts = match.groupdict()
    return sum(float(parts[unit] or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1)))


def random_seed() -> int:
    """The one way genq picks a seed that was not given."""
    return secrets.randbelow(MAX_SEED + 1)


class SpecError(ValueError):
    """A job's parameters are invalid; `str()` is one line meant for the user."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field.replace('_', '-')}: {reason}" if field else reason)
        self.reason, self.field = reason, field


class JobParams(BaseModel):
    """The parameters of one job kind. Subclasses set `kind` and `run_function` ("module:function")."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              validate_default=True, use_attribute_docstrings=True)

    kind: ClassVar[str]
    run_function: ClassVar[str]
    # "module:function" running several jobs of the kind as one batch: (params, ctx) pairs in, an
    # iterator of (index, result or exception) out, each as soon as it is known. None: never batched.
    batch_function: ClassVar[str | None] = None
    # Keys of a finished job's result that a group's table shows beside the swept parameters.
    summary: ClassVar[tuple[str, ...]] = ()

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one batch (see batch_function)."""
        return None

    def batch_images(self) -> int:
        """How much of a batch's budget (GENQ_SD_MAX_BATCH) this job takes."""
        return 1

    def with_seed(self) -> "JobParams":
        """A copy whose `seed` is set (randomly when it was not given), so the job records what it ran with."""
        if "seed" in type(self).model_fields and getattr(self, "seed") is None:
            return self.replace(seed=random_seed())
        return self

    def replace(self, **changes: Any) -> "JobParams":
        """A validated copy with some parameters changed."""
        return parse(type(self), {**self.to_json(), **changes})

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def job_refs(cls) -> dict[str, str]:
        """Parameter name -> the kind of job it names."""
        return {name: field.json_schema_extra["job_kind"] for name, field in cls.model_fields.items()
                if isinstance(field.json_schema_extra, dict) and "job_kind" in field.json_schema_extra}


def settings_from(context: Any) -> Settings:
    """The settings a validator checks against: those passed in, else the environment's."""
    if isinstance(context, dict) and context.get("settings") is not None:
        return context["settings"]
    return load_settings()


def parse(cls: type[JobParams], data: dict[str, Any], settings: Settings | None = None) -> JobParams:
    """Validate `data` into `cls`; the first problem becomes a one-line SpecError."""
    try:
        return cls.model_validate(data, context={"settings": settings})
    except ValidationError as exc:
        raise spec_error(exc) from None


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def spec_error(exc: ValidationError) -> SpecError:
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error["loc"] else None
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] == "extra_forbidden":
        return SpecError(f"unknown parameter {field!r}")
    got = "" if error["type"] in ("missing", "value_error") else f", got {short_repr(error.get('input'))}"
    return SpecError(f"{message}{got}", field)
