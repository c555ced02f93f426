"""The seed's VAE loss: reconstruction BCE + beta * KL, summed over pixels and over the batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """The batch's summed loss (a 0-dim tensor), as the seed reports it before averaging."""
    bce = F.binary_cross_entropy(recon.flatten(1), x.flatten(1), reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + beta * kl
