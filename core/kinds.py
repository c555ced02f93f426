"""Job kinds: a kind is a spec (core.specs) plus a run function `run(spec, ctx) -> dict`."""
from __future__ import annotations

import importlib
from typing import Callable

RUN_FUNCTIONS: dict[str, str] = {
    "train-vae": "genq.core.vae.train:run",
    "interpolate": "genq.core.vae.interpolate:run",
    "sample-vae": "genq.core.vae.sample:run",
    "sd": "genq.core.sd.job:run",
}


def run_function(kind: str) -> Callable:
    """Imported on first use, so that neither the client nor a worker's start imports torch."""
    module_name, _, attribute = RUN_FUNCTIONS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attribute)
