"""Interpolate in a trained VAE's latent space between two MNIST test images, as the seed does.

The seed decodes lambda * mu1 + (1 - lambda) * mu2 for lambda in linspace(0, 1, K) and shows the
frames left to right. Here image 1 is the `to` image and image 2 the `from` image, so the strip
reads from -> to left to right with lambda increasing, as the seed's figure (its img2 on the left).
"""
from __future__ import annotations

import json
from typing import Any

import torch

from genq.core.context import JobContext
from genq.core.kinds.interpolate import Interpolate
from genq.core.vae.data import first_index_of_digit, load_mnist
from genq.core.vae.pictures import strip_png
from genq.core.vae.model import load_job_model


def interpolate_latents(mu1: torch.Tensor, mu2: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambdas (K,), latents (K, latent)) with latents[k] = lambdas[k] * mu1 + (1 - lambdas[k]) * mu2."""
    lambdas = torch.linspace(0, 1, steps, device=mu1.device)  # (K,)
    weights = lambdas[:, None]  # (K, 1)
    return lambdas, weights * mu1[None, :] + (1 - weights) * mu2[None, :]


def choose_indices(spec: Interpolate, labels: torch.Tensor) -> tuple[int, int]:
    """(from, to) test-set indices: given, or the first test image of each digit."""
    if spec.by_digit:
        return first_index_of_digit(labels, spec.from_digit), first_index_of_digit(labels, spec.to_digit)
    return spec.indices


def run(spec: Interpolate, ctx: JobContext) -> dict[str, Any]:
    device = torch.device(ctx.device)
    model = load_job_model(ctx, spec.model)
    test = load_mnist(ctx.data_root, train=False, device=device)
    from_index, to_index = choose_indices(spec, test.labels)
    pair = test.images[[to_index, from_index]]  # (2, 1, 28, 28): image 1, image 2
    with torch.inference_mode():
        mu1, mu2 = model.encode_mu(pair)  # (latent,), (latent,)
        lambdas, latents = interpolate_latents(mu1, mu2, spec.steps)
        frames = model.decode(latents)  # (K, 1, 28, 28)
    ctx.check_cancelled()

    strip = torch.cat([pair[1:], frames, pair[:1]])  # from-original, frames by lambda, to-original
    labels = [str(int(test.labels[i])) for i in (from_index, to_index)]
    captions = [f"from #{from_index} ({labels[0]})"] + [f"lambda={v:.2f}" for v in lambdas.tolist()] + [f"to #{to_index} ({labels[1]})"]
    ctx.artifact("interpolation.png", strip_png(strip, captions))
    latents_doc = {
        "formula": "latent = lambda * mu1 + (1 - lambda) * mu2",
        "image1": {"index": to_index, "label": int(labels[1]), "role": "to"},
        "image2": {"index": from_index, "label": int(labels[0]), "role": "from"},
        "mu1": mu1.tolist(),
        "mu2": mu2.tolist(),
        "frames": [{"lambda": lam, "latent": z} for lam, z in zip(lambdas.tolist(), latents.tolist())],
    }
    ctx.artifact("latents.json", json.dumps(latents_doc, indent=2).encode())
    ctx.progress(1, 1, f"interpolated test image {from_index} -> {to_index} in {spec.steps} steps")
    return {"from_index": from_index, "to_index": to_index, "from_label": int(labels[0]), "to_label": int(labels[1]),
            "steps": spec.steps, "lambdas": lambdas.tolist()}
