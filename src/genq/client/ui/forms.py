"""The submit form of each kind, generated from its declaration, and the values a POST gives back."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from genq.core.params import JobParams, parameter_base_type, parameter_choices, parameter_help

RUN_OPTIONS = ("queue", "priority")  # the run options the form offers besides the parameters
TYPE_WORDS = {int: "integer", float: "float", str: "string"}


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
    choices = parameter_choices(field.annotation)
    help_text = parameter_help(field)
    if not field.is_required() and field.default is not None:
        help_text += f" [default: {field.default}]"
    input_type = "select" if choices else ("number" if parameter_base_type(field.annotation) in (int, float) else "text")
    return FormField(name, name.replace("_", "-"), help_text, field.is_required(), choices, input_type)


class FieldError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def parse_form(cls: type[JobParams], form: typing.Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, run options) from the form's strings, each converted as its CLI option converts it;
    an empty field is left out (the declaration's default applies). FieldError names a bad field; the
    ranges are the declaration's to check."""
    values = {}
    for name, field in cls.model_fields.items():
        text = (form.get(name) or "").strip() if name != "prompt" and name != "negative" else form.get(name) or ""
        if text == "":
            continue
        values[name] = converted(name, field.annotation, text)
    options: dict[str, Any] = {}
    if (queue := (form.get("queue") or "").strip()):
        options["queue"] = queue
    if (priority := (form.get("priority") or "").strip()):
        options["priority"] = converted("priority", int, priority)
    return values, options


def converted(name: str, annotation: Any, text: str) -> Any:
    """A field's text as its parameter's type, or FieldError in the words the CLI uses."""
    choices = parameter_choices(annotation)
    if choices:
        if text not in choices:
            raise FieldError(name, f"{text!r} is not one of {', '.join(map(repr, choices))}.")
        return text
    base = parameter_base_type(annotation)
    try:
        return base(text)
    except ValueError:
        raise FieldError(name, f"{text!r} is not a valid {TYPE_WORDS[base]}.") from None


def prefill(params: dict[str, Any]) -> dict[str, str]:
    """A stored job's parameters as the form's field values (Submit again)."""
    return {name: "" if value is None else str(value) for name, value in params.items()}
