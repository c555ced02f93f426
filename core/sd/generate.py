"""Text-to-image generation, step by step, on diffusers' UNet, VAE and schedulers and a CLIP text encoder.

Same model + settings + seed give the same images as diffusers' StableDiffusionPipeline called with
`generator=torch.Generator("cpu").manual_seed(seed)`: one CPU generator draws the whole batch's
initial latents (scaled by the scheduler's init_noise_sigma) and any noise an ancestral scheduler
draws in `step()`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from genq.core.sd.loading import Components
from genq.core.sd.prompt import encode_prompt, truncation_warning, uses_guidance
from genq.core.sd.schedulers import make_scheduler

OnStep = Callable[[int, int], None]  # (steps done, total steps); may raise to stop the run


class GenerationInputError(ValueError):
    """The generation settings are invalid; the message is one line meant for the user."""


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


def prepare_latents(
    batch: int, channels: int, height: int, width: int, scale_factor: int, init_noise_sigma: float,
    dtype: torch.dtype, device: torch.device, generator: torch.Generator,
) -> torch.Tensor:
    """Initial noise (batch, channels, height/f, width/f), drawn on the generator's device, then moved."""
    shape = (batch, channels, height // scale_factor, width // scale_factor)
    latents = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    return latents * init_noise_sigma


def decode_latents(components: Components, latents: torch.Tensor) -> np.ndarray:
    """Latents (N, 4, h, w) -> images (N, H, W, 3) float32 in [0, 1] on the CPU."""
    vae = components.vae
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]  # (N, 3, H, W) in [-1, 1]
    image = (image * 0.5 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()


@torch.inference_mode()
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
    """Generate `num_images` images for one prompt. `on_step(done, total)` runs after every UNet step."""
    check_inputs(components, width, height)
    device = components.device
    guided = uses_guidance(guidance)
    warnings = _prompt_warnings(components, prompt, negative_prompt, guided)

    prompt_embeds, negative_embeds = encode_prompt(
        components.tokenizer, components.text_encoder, prompt, negative_prompt, num_images, device, guidance
    )
    if guided:
        prompt_embeds = torch.cat([negative_embeds, prompt_embeds])  # (2N, 77, dim): [uncond, cond]

    sampler = make_scheduler(scheduler, components.scheduler_config)
    sampler.set_timesteps(steps, device=device)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = prepare_latents(
        num_images, components.unet.config.in_channels, height, width, components.vae_scale_factor,
        sampler.init_noise_sigma, prompt_embeds.dtype, device, generator,
    )
    latents = denoise(components, sampler, latents, prompt_embeds, guidance if guided else None, generator, on_step)
    return Generation(decode_latents(components, latents), warnings)


def denoise(
    components: Components, sampler, latents: torch.Tensor, embeds: torch.Tensor,
    guidance: float | None, generator: torch.Generator, on_step: OnStep | None,
) -> torch.Tensor:
    """The denoising loop; `guidance` None means embeds hold the positive prompt only."""
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(sampler.step).parameters else {}
    timesteps = sampler.timesteps
    total = len(timesteps)  # PNDM (PLMS) runs one more UNet step than asked for
    for i, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guidance is not None else latents  # (2N, 4, h, w) with guidance
        model_input = sampler.scale_model_input(model_input, t)
        noise = components.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        if guidance is not None:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance * (cond - uncond)
        latents = sampler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1, total)
    return latents


def _prompt_warnings(components: Components, prompt: str, negative_prompt: str | None, guided: bool) -> list[str]:
    warnings = [truncation_warning(components.tokenizer, prompt, "prompt")]
    if negative_prompt and guided:
        warnings.append(truncation_warning(components.tokenizer, negative_prompt, "negative prompt"))
    elif negative_prompt:
        warnings.append("the negative prompt was ignored: it only acts with guidance above 1")
    return [w for w in warnings if w]
