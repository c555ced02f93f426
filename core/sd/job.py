"""The `sd` job: one prompt (and optional negative prompt) to PNG images with their settings."""
from __future__ import annotations

import time
from typing import Any

from genq.core.context import JobContext
from genq.core.sd.generate import generate
from genq.core.images import png_bytes
from genq.core.sd.images import make_grid, settings_png
from genq.core.sd.loading import load_components
from genq.core.kinds.sd import SD
from genq.core.params import random_seed


def run(spec: SD, ctx: JobContext) -> dict[str, Any]:
    started = time.perf_counter()
    ctx.check_cancelled()
    components, cached = ctx.cache.get_or_load(
        ("sd", spec.model, ctx.device), lambda: load_components(spec.model, ctx.device)
    )
    ctx.log(f"reused cached model {spec.model}" if cached else f"loaded model {spec.model}")

    seed = spec.seed
    if seed is None:
        seed = random_seed()
        ctx.log(f"no seed given; using seed {seed}")

    def on_step(done: int, total: int) -> None:
        ctx.progress(done, total, f"denoising step {done}/{total}")
        ctx.check_cancelled()

    ctx.check_cancelled()
    generation = generate(
        components, spec.prompt, spec.negative, steps=spec.steps, guidance=spec.guidance, seed=seed,
        width=spec.width, height=spec.height, num_images=spec.num_images, scheduler=spec.scheduler, on_step=on_step,
    )
    for warning in generation.warnings:
        ctx.log(warning, level="warning")

    images = generation.to_pil()
    files = []
    for index, image in enumerate(images):
        name = f"image-{index}.png"
        ctx.artifact(name, settings_png(image, _settings(spec, seed, index)), "image/png")
        files.append({"file": name, "seed": seed, "batch_index": index})
    if len(images) > 1:
        ctx.artifact("grid.png", png_bytes(make_grid(images)), "image/png")

    return {
        "seed": seed,
        "images": files,
        "model": spec.model,
        "model_cache": "hit" if cached else "miss",
        "warnings": generation.warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _settings(spec: SD, seed: int, index: int) -> dict[str, Any]:
    return {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative or "",
        "seed": seed,
        "steps": spec.steps,
        "guidance": spec.guidance,
        "scheduler": spec.scheduler,
        "width": spec.width,
        "height": spec.height,
        "model": spec.model,
        "image_index": index,
        "batch_size": spec.num_images,
    }
