"""Text-to-image generation, step by step, on diffusers' UNet, VAE and schedulers and a CLIP text encoder.

Several requests (each with its own prompt, negative prompt, guidance scale, seed and image count)
run as one batch through the UNet when they share the model, size, steps, scheduler and whether
guidance is on. Every image has its own CPU generator, `torch.Generator("cpu").manual_seed(seed + i)`
for image i of a request: it draws that image's initial latents (scaled by the scheduler's
init_noise_sigma) and, for ancestral schedulers, its noise at every step. So a request's images never
depend on what it was batched with, and they are those of diffusers' StableDiffusionPipeline called
with `generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from genq.core.kinds.sd import uses_guidance
from genq.core.sd.loading import Components
from genq.core.sd.prompt import encode_prompt, truncation_warning
from genq.core.sd.schedulers import make_scheduler

OnStep = Callable[[int, int], None]  # (steps done, total steps); may raise to stop the run


class GenerationInputError(ValueError):
    """The generation settings are invalid; the message is one line meant for the user."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's share of a batch: image i is drawn from seed + i."""

    prompt: str
    negative: str | None = None
    guidance: float = 7.5
    seed: int = 0
    num_images: int = 1


@dataclass
class EncodedRequest:
    """A request with its prompt embeddings, ready to join a batch."""

    request: GenerationRequest
    prompt_embeds: torch.Tensor  # (n, 77, dim)
    negative_embeds: torch.Tensor | None  # (n, 77, dim); None without guidance
    warnings: list[str]


@dataclass
class Generation:
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    warnings: list[str] = field(default_factory=list)

    def to_pil(self) -> list[Image.Image]:
        return [Image.fromarray(image) for image in (self.images * 255).round().astype("uint8")]


def check_inputs(components: Components, width: int, height: int) -> None:
    """Raise GenerationInputError for settings this model cannot take, before any work is done.

    The ranges of every setting are the `sd` kind's declaration (genq.core.kinds.sd); what is left
    here depends on the loaded model.
    """
    factor = components.vae_scale_factor
    for name, value in (("width", width), ("height", height)):
        if value % factor:
            raise GenerationInputError(f"{name} must be a multiple of {factor} for this model, got {value}")
    if components.unet.config.time_cond_proj_dim is not None:
        raise GenerationInputError("this model embeds the guidance scale (time_cond_proj_dim, e.g. an LCM): not supported")


def check_batch(requests: Sequence[GenerationRequest]) -> None:
    """Raise GenerationInputError unless the requests can share one UNet batch."""
    if not requests:
        raise GenerationInputError("a batch needs at least one request")
    if len({uses_guidance(request.guidance) for request in requests}) > 1:
        raise GenerationInputError(
            "requests with guidance above 1 and requests without cannot share a batch "
            "(with guidance the UNet runs two rows per image); run them in separate batches"
        )


def image_generators(seed: int, num_images: int) -> list[torch.Generator]:
    """Image i's own CPU generator, seeded seed + i: the same image whatever batch it is drawn in."""
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]


def row_slices(requests: Sequence[GenerationRequest]) -> list[slice]:
    """Each request's rows of the batch's latents: its images, requests in batch order."""
    slices, start = [], 0
    for request in requests:
        slices.append(slice(start, start + request.num_images))
        start += request.num_images
    return slices


@torch.inference_mode()
def encode_request(components: Components, request: GenerationRequest) -> EncodedRequest:
    """The request's prompt (and, with guidance, negative prompt: "" when none) embedded once per image."""
    guided = uses_guidance(request.guidance)
    warnings = _prompt_warnings(components, request.prompt, request.negative, guided)
    prompt_embeds, negative_embeds = encode_prompt(
        components.tokenizer, components.text_encoder, request.prompt, request.negative, request.num_images,
        components.device, request.guidance,
    )
    return EncodedRequest(request, prompt_embeds, negative_embeds, warnings)


def prepare_latents(
    generators: Sequence[torch.Generator], channels: int, height: int, width: int, scale_factor: int,
    init_noise_sigma: float, dtype: torch.dtype, device: torch.device,
) -> torch.Tensor:
    """Initial noise (N, channels, height/f, width/f): row i drawn (1, ...) from generators[i] on its
    device (the CPU), then moved, as diffusers' randn_tensor does with a list of generators."""
    shape = (1, channels, height // scale_factor, width // scale_factor)
    rows = [torch.randn(shape, generator=generator, device=generator.device, dtype=dtype) for generator in generators]
    return torch.cat(rows).to(device) * init_noise_sigma


@torch.inference_mode()
def denoise_batch(
    components: Components,
    requests: Sequence[EncodedRequest],
    *,
    steps: int,
    width: int,
    height: int,
    scheduler: str,
    unet: torch.nn.Module | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Denoise every request's images as one batch, one UNet step at a time.

    Yields (steps done, total steps, latents (N, 4, h, w)) after every step; the last latents are the
    result, rows in request order (`row_slices`). With guidance the UNet input is [all negative rows,
    all positive rows] (2N) and each row is guided by its own request's scale. `unet` replaces
    components.unet (its compiled form).
    """
    check_batch([encoded.request for encoded in requests])
    device = components.device
    unet = unet if unet is not None else components.unet
    guided = uses_guidance(requests[0].request.guidance)

    embeds = torch.cat([encoded.prompt_embeds for encoded in requests])  # (N, 77, dim)
    if guided:
        negative = torch.cat([encoded.negative_embeds for encoded in requests])
        embeds = torch.cat([negative, embeds])  # (2N, 77, dim): [uncond, cond]
        scales = torch.tensor(  # (N, 1, 1, 1) float32: each row's own guidance scale
            [encoded.request.guidance for encoded in requests for _ in range(encoded.request.num_images)], device=device
        ).view(-1, 1, 1, 1)

    sampler = make_scheduler(scheduler, components.scheduler_config)
    sampler.set_timesteps(steps, device=device)
    generators = [g for encoded in requests for g in image_generators(encoded.request.seed, encoded.request.num_images)]
    latents = prepare_latents(
        generators, components.unet.config.in_channels, height, width, components.vae_scale_factor,
        sampler.init_noise_sigma, embeds.dtype, device,
    )
    # Ancestral schedulers draw noise in step(): each row from its own image's generator.
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(sampler.step).parameters else {}
    timesteps = sampler.timesteps
    total = len(timesteps)  # PNDM (PLMS) runs one more UNet step than asked for
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents  # (2N, 4, h, w) with guidance
        model_input = sampler.scale_model_input(model_input, t)
        noise = unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        if guided:
            uncond, cond = noise.chunk(2)
            noise = (uncond + scales * (cond - uncond)).to(uncond.dtype)
        latents = sampler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
        yield i + 1, total, latents


@torch.inference_mode()
def decode_latents(components: Components, latents: torch.Tensor) -> np.ndarray:
    """Latents (N, 4, h, w) -> images (N, H, W, 3) float32 in [0, 1] on the CPU."""
    vae = components.vae
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]  # (N, 3, H, W) in [-1, 1]
    image = (image * 0.5 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()


class UNetBatch:
    """Encoded requests as one UNet batch: iterate `steps()` to denoise, one UNet step per item, then
    `generation(i)` decodes request i's images. The one generation path: a worker's batch of sd jobs
    (genq.core.sd.job.run_batch) drives it, and so does `generate_batch` (and `generate`, which bench/sd.py times)."""

    def __init__(self, components: Components, requests: Sequence[EncodedRequest], *, steps: int, width: int,
                 height: int, scheduler: str, unet: torch.nn.Module | None = None) -> None:
        self.components, self.requests, self.unet = components, list(requests), unet
        self.settings = {"steps": steps, "width": width, "height": height, "scheduler": scheduler}
        self.rows = row_slices([encoded.request for encoded in requests])
        self.latents: torch.Tensor | None = None  # (N, 4, h, w) after the last step
        self.current: torch.Tensor | None = None  # (N, 4, h, w) after the latest step (previews)

    def steps(self) -> Iterator[tuple[int, int]]:
        """(steps done, total steps) after every UNet step; stopping early leaves the batch undecodable."""
        for done, total, latents in denoise_batch(self.components, self.requests, unet=self.unet, **self.settings):
            self.current = latents
            self.latents = latents if done == total else None
            yield done, total

    def first_latents(self, index: int) -> torch.Tensor:
        """Request `index`'s first image's latents (C, h, w) after the latest step."""
        return self.current[self.rows[index].start]

    def generation(self, index: int) -> Generation:
        """Request `index`'s images. One VAE call per request: a batch's decode needs no more memory than
        its largest request alone."""
        if self.latents is None:
            raise RuntimeError("the batch has not been denoised to its last step")
        return Generation(decode_latents(self.components, self.latents[self.rows[index]]), self.requests[index].warnings)


def generate_batch(
    components: Components,
    requests: Sequence[GenerationRequest],
    *,
    steps: int,
    width: int,
    height: int,
    scheduler: str,
    on_step: OnStep | None = None,
) -> list[Generation]:
    """Generate every request's images in one UNet batch: one Generation per request, in order.

    A request's images are those it gets alone (up to float rounding). `on_step(done, total)` runs
    after every UNet step.
    """
    check_inputs(components, width, height)
    check_batch(requests)
    batch = UNetBatch(components, [encode_request(components, request) for request in requests], steps=steps,
                      width=width, height=height, scheduler=scheduler)
    for done, total in batch.steps():
        if on_step is not None:
            on_step(done, total)
    return [batch.generation(index) for index in range(len(requests))]


def generate(
    components: Components,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    steps: int = 30,
    guidance: float = 7.5,
    seed: int = 0,
    width: int = 512,
    height: int = 512,
    num_images: int = 1,
    scheduler: str = "dpm++",
    on_step: OnStep | None = None,
) -> Generation:
    """Generate `num_images` images for one prompt (image i from seed + i): a batch of one request."""
    request = GenerationRequest(prompt, negative_prompt, guidance, seed, num_images)
    return generate_batch(
        components, [request], steps=steps, width=width, height=height, scheduler=scheduler, on_step=on_step
    )[0]


def _prompt_warnings(components: Components, prompt: str, negative_prompt: str | None, guided: bool) -> list[str]:
    warnings = [truncation_warning(components.tokenizer, prompt, "prompt")]
    if negative_prompt and guided:
        warnings.append(truncation_warning(components.tokenizer, negative_prompt, "negative prompt"))
    elif negative_prompt:
        warnings.append("the negative prompt was ignored: it only acts with guidance above 1")
    return [w for w in warnings if w]
