"""Scheduler names a job may ask for, each built from the model's own scheduler configuration."""
from __future__ import annotations

from typing import Any, Mapping

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# name -> (class, overrides applied on top of the model's configuration)
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),  # DPM++ 2M
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {}),
}

# The names the popular UIs write in their `parameters` text (Sampler: ...).
SAMPLER_LABELS = {"dpm++": "DPM++ 2M", "ddim": "DDIM", "euler": "Euler", "euler-a": "Euler a", "pndm": "PLMS"}


def make_scheduler(name: str, config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler (schedulers keep per-run state: never share one between runs)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(config, **overrides)
