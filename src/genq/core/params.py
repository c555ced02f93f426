"""What every job kind's declaration is built on: a frozen pydantic model of its parameters.

A kind subclasses `JobParams`, sets `kind` and `run_function`, and declares each parameter once
with its type, default, range and help text. Everything else is generated from that: the CLI's
options and `--help` (genq.client.submit), validation and its one-line messages, and the JSON
stored with the job. Numbers are finite (no inf or NaN) and strict (no "3" for an int).
"""
from __future__ import annotations

import re
import secrets
from types import MappingProxyType
from typing import Annotated, Any, Callable, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

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


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as given, in words; None when it can. PostgreSQL keeps no NUL
    character in text or JSON, and a lone surrogate (from undecodable bytes) has no UTF-8 encoding."""
    if "\x00" in text:
        return "must not contain the NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"must not contain a lone surrogate (U+{ord(text[exc.start]):04X}): it is not valid Unicode text"
    return None


class StoredText(BaseModel):
    """A model whose text fields are stored: each is refused, by its field's name, when text_problem finds one."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str) and (problem := text_problem(value)):
            raise ValueError(problem)
        return value


class RunOptions(StoredText):
    """How a job of any kind is run: its queue and priority, time limit, retries of failed runs, and idempotency."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    time_limit_s: float | None = Field(None, gt=0, le=MAX_TIME_LIMIT_S)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    queue: str | None = Field(None, pattern=QUEUE_NAME.pattern)  # None: the kind's default queue (Settings.queue_for)
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9)  # higher runs first
    notify: str | None = None  # a webhook URL POSTed when the job (or its group) ends; see genq.core.webhooks

    @field_validator("notify")
    @classmethod
    def _allowed_webhook(cls, url: str | None, info: ValidationInfo) -> str | None:
        from genq.core.webhooks import NotAllowed, check_form, check_url

        if url is None:
            return None
        try:
            if isinstance(info.context, dict) and info.context.get("allow_checked_elsewhere"):
                return check_form(url)  # a remote client's: its server checks the host against its own list
            return check_url(url, settings_from(info.context).webhook_allow)
        except NotAllowed as exc:
            raise ValueError(str(exc)) from None


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


class JobParams(StoredText):
    """The parameters of one job kind. Subclasses set `kind` and `run_function` ("module:function")."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              validate_default=True, use_attribute_docstrings=True)

    kind: ClassVar[str]
    run_function: ClassVar[str]
    # "module:function" running several jobs of the kind as one batch: (params, ctx) pairs in, an
    # iterator of (index, result or exception) out, each as soon as it is known. None: never batched.
    batch_function: ClassVar[str | None] = None
    # The Settings attribute holding how many batch units (batch_images) one batch may take; None: no setting.
    # "module:function" that loads what GENQ_PRELOAD names into a worker's model cache before it takes jobs:
    # (cache, settings, device) -> what it did, in words; ValueError for a value it refuses. None: nothing.
    preload_function: ClassVar[str | None] = None
    batch_budget_setting: ClassVar[str | None] = None
    # Keys of a finished job's result that a group's table shows beside the swept parameters.
    summary: ClassVar[tuple[str, ...]] = ()
    # The artifact that pictures a job of this kind in galleries and grids; None: it has none.
    main_picture: ClassVar[str | None] = None
    # The artifacts a job's page opens with, at their natural size (names, or patterns such as "image-*.png");
    # empty: the main picture alone.
    main_results: ClassVar[tuple[str, ...]] = ()
    # A group's report figures: file name -> "module:function" taking a genq.core.report.GroupView and
    # returning PNG bytes, or None when the group has nothing to draw yet.
    report_figures: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one batch (see batch_function)."""
        return None

    def batch_images(self) -> int:
        """How many units of a batch's budget (batch_budget) this job takes."""
        return 1

    @classmethod
    def batch_budget(cls, settings: Settings) -> int:
        """The batch units one batch of this kind may hold: 1 when the kind does not batch."""
        if cls.batch_function is None or cls.batch_budget_setting is None:
            return 1
        return max(1, int(getattr(settings, cls.batch_budget_setting)))

    def with_seed(self) -> "JobParams":
        """A copy whose `seed` is set (randomly when it was not given), so the job records what it ran with."""
        if "seed" in type(self).model_fields and getattr(self, "seed") is None:
            return self.replace(seed=self.seed_or_random())
        return self

    def seed_or_random(self, log: Callable[[str], Any] | None = None) -> int:
        """The job's seed, else a random one, told to `log`: the one place genq picks a missing seed.

        Submitting records the seed (with_seed); a run still meets none when its job was stored
        without one, or when its run function is called directly."""
        seed = getattr(self, "seed", None)
        if seed is None:
            seed = random_seed()
            if log is not None:
                log(f"no seed given; using seed {seed}")
        return seed

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


# -- a parameter's declaration, read for the CLI's options and the dashboard's form -----------------------
import types
import typing

import annotated_types
from pydantic.fields import FieldInfo

PARAMETER_TYPES = (int, float, str)


def _without_none(annotation: Any) -> Any:
    """`X | None` is X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def parameter_choices(annotation: Any) -> tuple[str, ...]:
    """The values a `Literal[...]` parameter may take, as text; () for any other parameter."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(choice) for choice in typing.get_args(annotation))
    return ()


def parameter_base_type(annotation: Any) -> type:
    """int, float or str: what a parameter's text is converted to (a choice stays text)."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if annotation not in PARAMETER_TYPES:
        raise TypeError(f"a parameter is an int, a float, a str or a Literal of them, not {annotation!r}")
    return annotation


def range_text(field: FieldInfo) -> str:
    """The declared bounds and step, as ` [1..10, multiple of 8]`; '' when there are none."""
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


def parameter_help(field: FieldInfo) -> str:
    """The declaration's description followed by its range."""
    return (field.description or "") + range_text(field)
