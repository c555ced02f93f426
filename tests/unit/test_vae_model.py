"""The seed's VAE: shapes, reparameterisation, files, and the loss against a hand-computed value."""
import math

import pytest
import torch

from genq.core.vae.loss import vae_loss
from genq.core.vae.model import VAE, VAEConfig, config_bytes, load_trained, model_bytes


def test_shapes_follow_the_seed():
    model = VAE(VAEConfig(latent_dims=3, capacity=4))
    x = torch.rand(5, 1, 28, 28)
    recon, mu, logvar = model(x)
    assert recon.shape == (5, 1, 28, 28)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.encoder.fc_mu.in_features == 2 * 4 * 7 * 7
    assert model.decoder.fc.out_features == 2 * 4 * 7 * 7
    assert 0 <= recon.min() and recon.max() <= 1


def test_training_samples_z_and_evaluation_uses_mu():
    model = VAE(VAEConfig(latent_dims=2, capacity=4))
    x = torch.rand(3, 1, 28, 28)
    model.eval()
    recon_eval, mu, _ = model(x)
    assert torch.equal(recon_eval, model.decoder(mu))
    model.train()
    eps = torch.randn(3, 2)
    recon_train, mu, logvar = model(x, eps)
    assert torch.equal(recon_train, model.decoder(mu + eps * torch.exp(0.5 * logvar)))
    assert not torch.equal(model(x)[0], model(x)[0])  # fresh noise each call without eps


def test_save_and_load_round_trip(tmp_path):
    model = VAE(VAEConfig(latent_dims=2, capacity=4))
    (tmp_path / "model.safetensors").write_bytes(model_bytes(model))
    (tmp_path / "config.json").write_bytes(config_bytes(model.config))
    loaded = load_trained(tmp_path / "model.safetensors", tmp_path / "config.json", "cpu")
    assert loaded.config == model.config
    assert not loaded.training
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])


def test_loss_matches_a_hand_computed_value():
    recon = torch.tensor([[0.5, 0.8]])
    x = torch.tensor([[1.0, 0.0]])
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    bce = -math.log(0.5) - math.log(1 - 0.8)  # = ln 10
    kl = -0.5 * ((1 + 0 - 1 - 1) + (1 + math.log(2) - 0 - 2))  # = 1 - ln(2)/2
    assert vae_loss(recon, x, mu, logvar).item() == pytest.approx(bce + kl, rel=1e-6)
    assert vae_loss(recon, x, mu, logvar, beta=2.0).item() == pytest.approx(bce + 2 * kl, rel=1e-6)
    # a batch's loss is the sum of its images' losses
    batch = vae_loss(recon.repeat(3, 1), x.repeat(3, 1), mu.repeat(3, 1), logvar.repeat(3, 1))
    assert batch.item() == pytest.approx(3 * (bce + kl), rel=1e-6)
