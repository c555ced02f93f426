"""The seed's convolutional VAE for 28x28 MNIST digits, and its safetensors + JSON files."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

IMAGE_SIDE = 28


@dataclass(frozen=True)
class VAEConfig:
    latent_dims: int = 2
    capacity: int = 64  # c: channels of the first conv layer; the second has 2c

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "VAEConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config.capacity
        self.conv1 = nn.Conv2d(1, c, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1)
        self.fc_mu = nn.Linear(2 * c * 7 * 7, config.latent_dims)
        self.fc_logvar = nn.Linear(2 * c * 7 * 7, config.latent_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.conv1(x))  # (B, c, 14, 14)
        x = F.relu(self.conv2(x))  # (B, 2c, 7, 7)
        x = x.flatten(1)  # (B, 2c*7*7)
        return self.fc_mu(x), self.fc_logvar(x)  # (B, latent), (B, latent)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config.capacity
        self.capacity = c
        self.fc = nn.Linear(config.latent_dims, 2 * c * 7 * 7)
        self.conv2 = nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1)
        self.conv1 = nn.ConvTranspose2d(c, 1, kernel_size=4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.size(0), 2 * self.capacity, 7, 7)  # (B, 2c, 7, 7)
        x = F.relu(self.conv2(x))  # (B, c, 14, 14)
        return torch.sigmoid(self.conv1(x))  # (B, 1, 28, 28)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction, mu, logvar).

        Training samples z = mu + eps * std (eps ~ N(0, I), drawn here unless the caller passes it,
        which the trainer does so that one seeded generator drives the whole run); evaluation uses mu.
        """
        mu, logvar = self.encoder(x)
        if self.training:
            if eps is None:
                eps = torch.randn_like(mu)
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def encode_mu(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def model_bytes(model: VAE) -> bytes:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(tensors, metadata={"format": "pt"})


def config_bytes(config: VAEConfig) -> bytes:
    return config.to_json().encode()


def load_trained(model_path: Path, config_path: Path, device: str | torch.device = "cpu") -> VAE:
    """A trained VAE from its model.safetensors and config.json, in evaluation mode."""
    config = VAEConfig.from_json(Path(config_path).read_text())
    model = VAE(config)
    model.load_state_dict(load_file(str(model_path)))
    return model.to(device).eval()


def load_job_model(ctx, job_id: str) -> VAE:
    """The trained VAE of train-vae job `job_id`, through the worker's model cache."""
    def loader() -> VAE:
        return load_trained(ctx.job_artifact(job_id, "model.safetensors"), ctx.job_artifact(job_id, "config.json"), ctx.device)
    model, _ = ctx.cache.get_or_load(("vae", job_id, str(ctx.device)), loader)
    return model
