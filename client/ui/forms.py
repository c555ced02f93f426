"""The submit form of each kind, generated from its declaration, and the values a POST gives back."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import click
from pydantic.fields import FieldInfo

from genq.client.submit import click_type, range_text
from genq.core.params import JobParams

RUN_OPTIONS = ("queue", "priority")  # the run options the form offers besides the parameters


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    help: str
    required: bool
    choices: tuple[str, ...]
    input_type: str  # text, number, select


def form_fields(cls: type[JobParams]) -> list[FormField]:
    return [form_field(name, field) for name, field in cls.model_fields.items()]


def form_field(name: str, field: FieldInfo) -> FormField:
    kind = click_type(field.annotation)
    choices = tuple(kind.choices) if isinstance(kind, click.Choice) else ()
    help_text = (field.description or "") + range_text(field)
    if not field.is_required() and field.default is not None:
        help_text += f" [default: {field.default}]"
    input_type = "select" if choices else ("number" if kind in (click.INT, click.FLOAT) else "text")
    return FormField(name, name.replace("_", "-"), help_text, field.is_required(), choices, input_type)


class FieldError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def parse_form(cls: type[JobParams], form: typing.Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, run options) from the form's strings, each converted as its CLI option converts it;
    an empty field is left out (the declaration's default applies). FieldError names a bad field."""
    values = {}
    for name, field in cls.model_fields.items():
        text = (form.get(name) or "").strip() if name != "prompt" and name != "negative" else form.get(name) or ""
        if text == "":
            continue
        try:
            values[name] = click_type(field.annotation).convert(text, None, None)
        except click.BadParameter as exc:
            raise FieldError(name, exc.message) from None
    options: dict[str, Any] = {}
    if (queue := (form.get("queue") or "").strip()):
        options["queue"] = queue
    if (priority := (form.get("priority") or "").strip()):
        try:
            options["priority"] = click.IntRange(0, 9).convert(priority, None, None)
        except click.BadParameter as exc:
            raise FieldError("priority", exc.message) from None
    return values, options


def prefill(params: dict[str, Any]) -> dict[str, str]:
    """A stored job's parameters as the form's field values (Submit again)."""
    return {name: "" if value is None else str(value) for name, value in params.items()}
