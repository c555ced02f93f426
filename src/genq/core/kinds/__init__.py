"""The job kinds genq runs. A kind is one declaration (a JobParams model) naming its run function.

genq's own kinds are the modules here. Any installed distribution adds kinds through the `genq.kinds`
entry-point group, each entry `name = "module:Class"` naming a JobParams subclass (see README, "Adding a
job kind"). A plugin that cannot be loaded, is not a kind, or takes a name already taken is skipped with
a one-line warning: it never stops genq from starting.
"""
from __future__ import annotations

import importlib
import logging
import re
from importlib.metadata import entry_points
from typing import Any, Callable

from genq.core.config import Settings
from genq.core.kinds.interpolate import Interpolate
from genq.core.kinds.sample_vae import SampleVAE
from genq.core.kinds.sd import SD
from genq.core.kinds.train_vae import TrainVAE
from genq.core.params import JobParams, SpecError, parse

ENTRY_POINT_GROUP = "genq.kinds"
BUILT_IN: tuple[type[JobParams], ...] = (TrainVAE, Interpolate, SampleVAE, SD)
KIND_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")  # a CLI command and a 32-character column in the store
REFERENCE = re.compile(r"^[\w.]+:[\w.]+$")
FIGURE_NAME = re.compile(r"^[\w][\w.-]*\.png$")  # a file of the report folder

log = logging.getLogger(__name__)


def kind_problem(cls: Any, taken: dict[str, type[JobParams]]) -> str | None:
    """Why `cls` cannot be a kind next to those `taken`, or None."""
    if not (isinstance(cls, type) and issubclass(cls, JobParams)):
        return f"{cls!r} is not a subclass of genq.core.params.JobParams"
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not KIND_NAME.match(kind):
        return f"its kind {kind!r} is not a name of 1-32 lowercase letters, digits and dashes"
    if kind in taken:
        return f"its kind {kind!r} is taken by {taken[kind].__module__}.{taken[kind].__qualname__}"
    for attribute in ("run_function", "batch_function", "preload_function"):
        value = getattr(cls, attribute, None)
        if (value is not None or attribute == "run_function") and not (isinstance(value, str) and REFERENCE.match(value)):
            return f"its {attribute} {value!r} is not a 'module:function' reference"
    for name, reference in dict(cls.report_figures).items():
        if not (isinstance(name, str) and FIGURE_NAME.match(name) and isinstance(reference, str) and REFERENCE.match(reference)):
            return f"its report figure {name!r}: {reference!r} is not 'name.png': 'module:function'"
    return None


def discover() -> tuple[type[JobParams], ...]:
    """The built-in kinds, then every installed plugin's that can run beside them (by entry point name)."""
    kinds = {cls.kind: cls for cls in BUILT_IN}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda entry: entry.name):
        source = f"{entry.dist.name} " if getattr(entry, "dist", None) else ""
        try:
            cls = entry.load()
            problem = kind_problem(cls, kinds)
        except Exception as exc:  # whatever a plugin's import raises, genq goes on without it
            log.warning("skipping job kind plugin %s(%s = %s): %s: %s", source, entry.name, entry.value,
                        type(exc).__name__, " ".join(str(exc).split()))
            continue
        if problem is not None:
            log.warning("skipping job kind plugin %s(%s = %s): %s", source, entry.name, entry.value, problem)
            continue
        kinds[cls.kind] = cls
    return tuple(kinds.values())


KIND_CLASSES: tuple[type[JobParams], ...] = discover()
KINDS: dict[str, type[JobParams]] = {cls.kind: cls for cls in KIND_CLASSES}


def installed() -> str:
    return ", ".join(KINDS) or "none"


def kind_class(kind: str) -> type[JobParams]:
    if kind not in KINDS:
        raise SpecError(f"unknown job kind {kind!r}; installed kinds: {installed()}")
    return KINDS[kind]


def missing_kind_message(kind: str) -> str:
    """Why a worker cannot run a job of `kind`: the error the job fails with."""
    return f"job kind {kind!r} is not installed on this worker (installed: {installed()})"


def params_from_json(kind: str, params: dict[str, Any], settings: Settings | None = None) -> JobParams:
    """A stored job's parameters, validated again (the worker's settings may be stricter)."""
    return parse(kind_class(kind), params, settings)


def run_function(kind: str) -> Callable:
    """Imported on first use, so that neither the client nor a worker's start imports torch."""
    return load_function(kind_class(kind).run_function)


def batch_function(kind: str) -> Callable:
    """The kind's function that runs several of its jobs as one batch (see JobParams.batch_function)."""
    reference = kind_class(kind).batch_function
    if reference is None:
        raise SpecError(f"{kind} jobs do not run in batches")
    return load_function(reference)


def report_figure(kind: str, name: str) -> Callable:
    """The function drawing report figure `name` of a group of `kind` jobs (see JobParams.report_figures)."""
    reference = kind_class(kind).report_figures.get(name)
    if reference is None:
        raise SpecError(f"{kind} groups have no report figure {name!r}")
    return load_function(reference)


def load_function(reference: str) -> Callable:
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
