"""The job kinds genq runs. A kind is one declaration (a JobParams model) naming its run function.

Adding a kind: write its module here (parameters plus `kind` and `run_function`), then add its
class to KIND_CLASSES below.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from genq.core.config import Settings
from genq.core.kinds.interpolate import Interpolate
from genq.core.kinds.sample_vae import SampleVAE
from genq.core.kinds.sd import SD
from genq.core.kinds.train_vae import TrainVAE
from genq.core.params import JobParams, SpecError, parse

KIND_CLASSES: tuple[type[JobParams], ...] = (TrainVAE, Interpolate, SampleVAE, SD)
KINDS: dict[str, type[JobParams]] = {cls.kind: cls for cls in KIND_CLASSES}


def kind_class(kind: str) -> type[JobParams]:
    if kind not in KINDS:
        raise SpecError(f"unknown job kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def params_from_json(kind: str, params: dict[str, Any], settings: Settings | None = None) -> JobParams:
    """A stored job's parameters, validated again (the worker's settings may be stricter)."""
    return parse(kind_class(kind), params, settings)


def run_function(kind: str) -> Callable:
    """Imported on first use, so that neither the client nor a worker's start imports torch."""
    return _load(kind_class(kind).run_function)


def batch_function(kind: str) -> Callable:
    """The kind's function that runs several of its jobs as one batch (see JobParams.batch_function)."""
    reference = kind_class(kind).batch_function
    if reference is None:
        raise SpecError(f"{kind} jobs do not run in batches")
    return _load(reference)


def _load(reference: str) -> Callable:
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
