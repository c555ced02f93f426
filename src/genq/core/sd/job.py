"""The `sd` job: one prompt (and optional negative prompt) to PNG images with their settings.

Compatible jobs (equal `SD.batch_key()`) run as one batch: `run_batch` loads the model once, denoises
every job's images in one UNet batch, and ends each job as soon as its end is known: a job cancelled
(or whose context fails) mid-batch ends at that step while the others go on. A job's images are those
it gets alone. `run` is a batch of one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from genq.core.cache import ModelCache
from genq.core.context import JobContext
from genq.core.images import png_bytes, square_grid
from genq.core.kinds.sd import SD, uses_guidance
from genq.core.sd.generate import EncodedRequest, Generation, GenerationRequest, UNetBatch, check_inputs, encode_request
from genq.core.sd.png_settings import settings_png
from genq.core.sd.preview import PREVIEW_EVERY_STEPS, preview_png
from genq.core.sd.loading import Components, compiled_unet, load_components

JobEnd = tuple[int, "dict[str, Any] | BaseException"]  # (index into the batch's jobs, its result or what ended it)


@dataclass
class _Member:
    """One job of a batch as it goes: its spec, context, and what its preparation made."""

    index: int
    spec: SD
    ctx: JobContext
    seed: int = 0
    encoded: EncodedRequest | None = None


def cache_key(model: str, device: str) -> tuple:
    return ("sd", model, device)


def load(cache: ModelCache, model: str, device: str) -> tuple[Components, float, bool]:
    """The model from `cache`, loaded on a miss: (components, seconds the load took (0.0 when cached), was_cached)."""
    seconds = 0.0

    def loader() -> Components:
        nonlocal seconds
        started = time.perf_counter()
        components = load_components(model, device)
        seconds = time.perf_counter() - started
        return components

    components, cached = cache.get_or_load(cache_key(model, device), loader)
    return components, seconds, cached


def warm(cache: ModelCache, model: str, device: str) -> tuple[float, bool]:
    """Load `model` into `cache` before any job asks for it (genq-worker --preload): (seconds, was_cached)."""
    _, seconds, cached = load(cache, model, device)
    return seconds, cached


def preload(cache: ModelCache, settings, device: str) -> str:
    """GENQ_PRELOAD (a model, checked like a job's --model) loaded into the worker's cache; what was done,
    in words. ValueError when the model is not allowed or not a model."""
    from genq.core.kinds.sd import check_model

    model = check_model(settings.preload, settings)
    seconds, _ = warm(cache, model, device)
    return f"preloaded {model} in {seconds:.1f} s"


def run(spec: SD, ctx: JobContext) -> dict[str, Any]:
    """One job: a batch of one. Returns its result, or raises what ended it."""
    for _, end in run_batch([(spec, ctx)]):
        if isinstance(end, BaseException):
            raise end
        return end
    raise RuntimeError("the sd batch ended without a result")  # run_batch yields once per job: not reached


def run_batch(jobs: Sequence[tuple[SD, JobContext]]) -> Iterator[JobEnd]:
    """Run compatible jobs as one batch; yield (index, result dict or exception) as each job ends.

    Each job is ended once. After a job's end is yielded its context is never called again. A model
    that fails to load, or a UNet batch that fails, ends every job still running; anything else
    (its context failing or asking to cancel, its prompt, its artifacts) ends that job alone.
    """
    if not jobs:
        return
    started = time.perf_counter()
    first, first_ctx = jobs[0]  # the batch's settings (all jobs share its batch key) and model cache
    key = first.batch_key()
    try:
        components, load_seconds, cached = load(first_ctx.cache, first.model, first_ctx.device)
        check_inputs(components, first.width, first.height)
    except Exception as exc:
        for index in range(len(jobs)):
            yield index, exc
        return

    # Each job's own preparation: a failure ends that job alone.
    active: dict[int, _Member] = {}
    for index, (spec, ctx) in enumerate(jobs):
        member = _Member(index, spec, ctx)
        try:
            _prepare(member, components, key, load_seconds, cached)
        except Exception as exc:
            yield index, exc
            continue
        active[index] = member
    members = list(active.values())  # batch order: the rows of the latents
    rows_of = {member.index: position for position, member in enumerate(members)}  # a job -> its request in the batch
    batch = {"jobs": len(members), "images": sum(m.spec.num_images for m in members)}
    if len(members) > 1:
        note = f"batched with {len(members) - 1} other sd job(s): {batch['images']} images in one UNet batch"
        yield from _for_each(active, lambda member: member.ctx.log(note))
    if not active:
        return

    # One UNet batch; after every step each job reports progress and checks its own cancellation.
    unet, compiling = components.unet, False
    if first_ctx.compile_models:
        unet = compiled_unet(components)
        shape = _unet_input_shape(components, first, batch["images"])
        compiling = shape not in components.compiled_shapes
    unet_batch = UNetBatch(components, [m.encoded for m in members], steps=first.steps, width=first.width,
                           height=first.height, scheduler=first.scheduler, unet=unet)
    step_started = time.perf_counter()
    try:
        for done, total in unet_batch.steps():
            if compiling:  # the compiled UNet's first call for this shape: compiling is most of it
                compiling = False
                components.compiled_shapes.add(shape)
                note = f"compiled the UNet for {'x'.join(map(str, shape))} in {time.perf_counter() - step_started:.1f} s"
                yield from _for_each(active, lambda member: member.ctx.log(note))
            yield from _for_each(active, lambda member: _report_step(member.ctx, done, total))
            if done % PREVIEW_EVERY_STEPS == 0 and done < total:
                yield from _for_each(active, lambda member: member.ctx.preview(
                    preview_png(unet_batch.first_latents(rows_of[member.index]))))
            if not active:
                return  # every job has ended: nothing left to compute for
    except Exception as exc:  # the batch's own computation failed (e.g. out of memory): every job in it ends
        for index in list(active):
            yield index, exc
        return

    # Each remaining job decodes its own rows and writes its own artifacts.
    for position, member in enumerate(members):
        if member.index not in active:
            continue  # ended mid-batch: its rows were computed but are discarded
        try:
            result = _write_images(member, unet_batch.generation(position))
        except Exception as exc:
            yield member.index, exc
            continue
        result.update(model_cache="hit" if cached else "miss", load_seconds=round(load_seconds, 3), batch=batch,
                      seconds=round(time.perf_counter() - started, 3))
        yield member.index, result


def _prepare(member: _Member, components: Components, key: tuple, load_seconds: float, cached: bool) -> None:
    """A job's own share of the work before the UNet: its log, seed and prompt embeddings."""
    spec, ctx = member.spec, member.ctx
    ctx.check_cancelled()
    if spec.batch_key() != key:
        raise ValueError("this job cannot share the batch it was given: its model, size, steps, scheduler "
                         "or guidance (on or off) differ from the batch's first job; run it alone")
    ctx.log(f"reused cached model {spec.model}" if cached else f"loaded model {spec.model} in {load_seconds:.2f} s")
    member.seed = spec.seed_or_random(ctx.log)
    request = GenerationRequest(spec.prompt, spec.negative, spec.guidance, member.seed, spec.num_images)
    member.encoded = encode_request(components, request)
    for warning in member.encoded.warnings:
        ctx.log(warning, level="warning")


def _for_each(active: dict[int, _Member], action: Callable[[_Member], None]) -> Iterator[JobEnd]:
    """Run `action` for every active job; a job whose action raises ends with that exception and leaves the batch."""
    for index, member in list(active.items()):
        try:
            action(member)
        except Exception as exc:
            del active[index]
            yield index, exc


def _report_step(ctx: JobContext, done: int, total: int) -> None:
    ctx.progress(done, total, f"denoising step {done}/{total}")
    ctx.check_cancelled()


def _unet_input_shape(components: Components, spec: SD, images: int) -> tuple[int, ...]:
    """(rows, channels, h, w) of the batch's UNet input: two rows per image with guidance."""
    rows = images * (2 if uses_guidance(spec.guidance) else 1)
    factor = components.vae_scale_factor
    return (rows, components.unet.config.in_channels, spec.height // factor, spec.width // factor)


def _write_images(member: _Member, generation: Generation) -> dict[str, Any]:
    """image-{i}.png (image i was drawn from seed + i) with its settings, and grid.png for more than one."""
    spec, ctx, seed = member.spec, member.ctx, member.seed
    images = generation.to_pil()
    files = []
    for index, image in enumerate(images):
        name = f"image-{index}.png"
        ctx.artifact(name, settings_png(image, _settings(spec, seed + index, index)), "image/png")
        files.append({"file": name, "seed": seed + index, "batch_index": index})
    if len(images) > 1:
        ctx.artifact("grid.png", png_bytes(square_grid(images)), "image/png")
    return {"seed": seed, "images": files, "model": spec.model, "warnings": generation.warnings}


def _settings(spec: SD, seed: int, index: int) -> dict[str, Any]:
    """One image's settings: `seed` is its own (the job's seed + index); it alone with num_images 1 remakes it."""
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
