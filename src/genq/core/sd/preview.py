"""A cheap preview of latents while they are denoised: each latent channel's linear contribution to R, G and B
(A1111's "Approx cheap"; the factors fit SD 1.x/2.x's 4-channel VAE latents), no VAE decode."""
from __future__ import annotations

import torch

from genq.core.images import png_bytes

# (4 latent channels, RGB): the linear map from SD's latents to an image in about [-1, 1]
LATENT_RGB_FACTORS = ((0.298, 0.207, 0.208),
                      (0.187, 0.286, 0.173),
                      (-0.158, 0.189, 0.264),
                      (-0.184, -0.271, -0.473))
PREVIEW_EVERY_STEPS = 3  # a preview after every third step (and the progress write throttles them further)


@torch.inference_mode()
def latents_rgb(latents: torch.Tensor) -> torch.Tensor:
    """(C, h, w) latents -> (h, w, 3) uint8. Latents of another channel count show their first three channels."""
    latents = latents.detach().float().cpu()
    if latents.shape[0] == len(LATENT_RGB_FACTORS):
        rgb = torch.einsum("chw,cr->hwr", latents, torch.tensor(LATENT_RGB_FACTORS))  # (h, w, 3)
    else:
        channels = latents[:3] if latents.shape[0] >= 3 else latents[:1].expand(3, -1, -1)
        rgb = channels.permute(1, 2, 0) / channels.abs().amax().clamp(min=1e-6)
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def preview_png(latents: torch.Tensor) -> bytes:
    """One image's latents (C, h, w) as a small PNG (h x w: an eighth of the image's size)."""
    from PIL import Image

    return png_bytes(Image.fromarray(latents_rgb(latents).numpy(), mode="RGB"))
