"""`sd`: Stable Diffusion text-to-image with an optional negative prompt."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from genq.core.config import Settings
from genq.core.params import JobParams, Seed, settings_from
from genq.core.sd.schedulers import SCHEDULERS

MAX_PROMPT_CHARS = 2_000  # CLIP reads 77 tokens; this only keeps a job's row and its PNGs small
MAX_MODEL_REF_CHARS = 4_096
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
Scheduler = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type]


def uses_guidance(guidance: float) -> bool:
    """Classifier-free guidance runs only above 1, as in diffusers (1 means the positive prompt alone)."""
    return guidance > 1


class SD(JobParams):
    """Stable Diffusion text-to-image with an optional negative prompt."""

    kind = "sd"
    run_function = "genq.core.sd.job:run"
    batch_function = "genq.core.sd.job:run_batch"
    preload_function = "genq.core.sd.job:preload"  # GENQ_PRELOAD / genq-worker --preload: a model
    batch_budget_setting = "sd_max_batch"  # GENQ_SD_MAX_BATCH images in one UNet batch
    summary = ("seed",)
    main_picture = "image-0.png"
    main_results = ("image-*.png",)
    report_figures = {"grid.png": "genq.core.sd.report:grid_figure"}

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the picture shows.")
    negative: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                                 description="What must not be in the picture (negative prompt).")
    steps: int = Field(30, ge=1, le=150, description="Denoising steps.")
    guidance: float = Field(7.5, ge=0, le=100, description="Classifier-free guidance scale.")
    seed: Seed = None
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image width in pixels.")
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image height in pixels.")
    num_images: int = Field(1, ge=1, le=16, description="Images for this prompt.")
    scheduler: Scheduler = Field("dpm++", description="The sampler.")
    model: str | None = Field(None, max_length=MAX_MODEL_REF_CHARS,
                              description="Diffusers folder, hub model id (org/name) or single-file .safetensors "
                                          "(default: GENQ_SD_MODEL).",
                              json_schema_extra={"metavar": "ID_OR_PATH"})

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt must not be blank")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None, info: ValidationInfo) -> str:
        settings = settings_from(info.context)
        return check_model(value or settings.sd_model, settings)

    @model_validator(mode="after")
    def _within_budget(self, info: ValidationInfo) -> "SD":
        settings = settings_from(info.context)
        pixels = self.num_images * self.width * self.height
        if pixels > settings.sd_max_pixels:
            raise ValueError(f"num-images x width x height = {pixels:,} pixels, over this installation's budget "
                             f"of {settings.sd_max_pixels:,} (GENQ_SD_MAX_PIXELS)")
        if pixels * self.steps > settings.sd_max_pixel_steps:
            raise ValueError(f"num-images x width x height x steps = {pixels * self.steps:,}, over this installation's "
                             f"budget of {settings.sd_max_pixel_steps:,} (GENQ_SD_MAX_PIXEL_STEPS)")
        return self

    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one UNet batch: same model, size, steps, scheduler, and
        guidance on or off (with it the UNet runs two rows per image). Prompts, negative prompts,
        guidance scales, seeds and image counts are each job's own."""
        return (self.model, self.width, self.height, self.steps, self.scheduler, uses_guidance(self.guidance))

    def batch_images(self) -> int:
        return self.num_images


def exists(path: Path) -> bool:
    """Whether `path` exists; False for one the file system will not look up (a name too long ...)."""
    try:
        return path.exists()
    except OSError:
        return False


def check_model(model: str, settings: Settings) -> str:
    """A hub id (org/name) as given, or a local diffusers folder / .safetensors file as its real absolute path.

    Local paths must lie under GENQ_MODEL_ROOTS when that is set; checked where the job is
    submitted and again on the worker, so a submitter cannot make workers read arbitrary files.
    """
    try:
        local = Path(model).expanduser()
    except RuntimeError:  # ~someone with no home here
        raise ValueError(f"no such model folder or file: {model}") from None
    looks_local = model.startswith(("/", ".", "~")) or model.endswith(".safetensors") or exists(local)
    if not looks_local:
        if HUB_ID.match(model) and ".." not in model and "--" not in model:
            return model
        raise ValueError(f"{model!r} is neither a hub model id (org/name) nor an existing local model")
    if not exists(local):
        raise ValueError(f"no such model folder or file: {model}")
    real = local.resolve()
    if real.is_dir():
        if not (real / "model_index.json").is_file():
            raise ValueError(f"{model} is not a diffusers model folder (it has no model_index.json)")
    elif not (real.is_file() and real.suffix.lower() == ".safetensors"):
        raise ValueError(f"{model} is neither a diffusers model folder nor a .safetensors file")
    roots = [root.resolve() for root in settings.model_roots]
    if roots and not any(real.is_relative_to(root) for root in roots):
        raise ValueError(f"{model} is outside the folders this installation allows models from (GENQ_MODEL_ROOTS)")
    return str(real)
