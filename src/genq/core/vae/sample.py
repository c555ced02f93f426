"""Decode draws from a trained VAE's prior N(0, I); for a 2-D latent space also its manifold."""
from __future__ import annotations

import math
from typing import Any

import torch

from genq.core.context import JobContext
from genq.core.kinds.sample_vae import SampleVAE
from genq.core.vae.data import load_mnist
from genq.core.vae.pictures import RECONSTRUCTION_COUNT, grid_png, reconstructions_png
from genq.core.vae.model import load_job_model

MANIFOLD_SIZE = 20
MANIFOLD_SPAN = 1.5


def manifold_latents(n: int = MANIFOLD_SIZE, span: float = MANIFOLD_SPAN) -> torch.Tensor:
    """(n*n, 2) latents of an n x n grid over [-span, span]^2, row-major as drawn on the page:
    latent[0] (x) increases left -> right along a row, latent[1] (y) decreases top -> bottom,
    so the picture has a plot's orientation (y up). Entry r*n + c is row r, column c.
    (The seed's notebook filled its grid with y increasing downwards: its figure is this one flipped
    upside down.)"""
    xs = torch.linspace(-span, span, n)  # (n,) left -> right
    ys = torch.linspace(span, -span, n)  # (n,) top -> bottom
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (n, n) each, [row, column]
    return torch.stack([x, y], dim=-1).reshape(n * n, 2)  # (n*n, 2)


def run(spec: SampleVAE, ctx: JobContext) -> dict[str, Any]:
    device = torch.device(ctx.device)
    model = load_job_model(ctx, spec.model)
    seed = spec.seed_or_random(ctx.log)
    latent_dims = model.config.latent_dims
    # Drawn on the CPU so that one seed gives the same samples on every device.
    z = torch.randn((spec.count, latent_dims), generator=torch.Generator().manual_seed(seed)).to(device)  # (count, latent)
    with torch.inference_mode():
        samples = model.decode(z)  # (count, 1, 28, 28)
    ctx.artifact("samples.png", grid_png(samples, columns=math.ceil(math.sqrt(spec.count))))
    artifacts = ["samples.png"]
    if latent_dims == 2:
        with torch.inference_mode():
            manifold = model.decode(manifold_latents().to(device))  # (400, 1, 28, 28)
        ctx.artifact("manifold.png", grid_png(manifold, columns=MANIFOLD_SIZE))
        artifacts.append("manifold.png")
    test = load_mnist(ctx.data_root, train=False, device=device)
    ctx.artifact("reconstructions.png", reconstructions_png(model, test.images[:RECONSTRUCTION_COUNT]))
    artifacts.append("reconstructions.png")
    ctx.progress(1, 1, f"decoded {spec.count} samples")
    return {"count": spec.count, "seed": seed, "latent_dims": latent_dims, "artifacts": artifacts}
