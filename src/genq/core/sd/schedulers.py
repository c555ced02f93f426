"""Scheduler names a job may ask for, each built from the model's own scheduler configuration.

This module is the one list of scheduler names; it imports diffusers only when a scheduler is
made, so that the job kind's declaration (and the CLI) can read the names cheaply.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

# name -> (diffusers class name, overrides applied on top of the model's configuration)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),  # DPM++ 2M
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}

# The names the popular UIs write in their `parameters` text (Sampler: ...).
SAMPLER_LABELS = {"dpm++": "DPM++ 2M", "ddim": "DDIM", "euler": "Euler", "euler-a": "Euler a", "pndm": "PLMS"}


def make_scheduler(name: str, config: Mapping[str, Any]):
    """A fresh scheduler (schedulers keep per-run state: never share one between runs)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(importlib.import_module("diffusers"), class_name)
    return cls.from_config(config, **overrides)
