"""Interpolation and sampling jobs over a saved VAE (random weights: the mechanics, not the quality)."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from genq.core.context import LocalContext
from genq.core.kinds.interpolate import Interpolate
from genq.core.kinds.sample_vae import SampleVAE
from genq.core.vae import interpolate, sample
from genq.core.vae.data import default_data_root, load_mnist
from genq.core.vae.interpolate import interpolate_latents
from genq.core.vae.model import VAE, VAEConfig, config_bytes, model_bytes
from genq.core.vae.sample import manifold_latents

DATA_ROOT = default_data_root(Path(__file__).resolve().parents[2])
needs_mnist = pytest.mark.skipif(not (DATA_ROOT / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {DATA_ROOT}")


def saved_model(root: Path, job_id: str, latent_dims: int = 2) -> VAE:
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dims=latent_dims, capacity=4)).eval()
    ctx = LocalContext(root, job_id=job_id)
    ctx.artifact("model.safetensors", model_bytes(model))
    ctx.artifact("config.json", config_bytes(model.config))
    return model


def test_interpolation_endpoints_are_exact_and_the_middle_is_the_midpoint():
    mu1, mu2 = torch.tensor([0.3, -1.7, 2.1]), torch.tensor([-0.9, 0.4, 1.3])
    lambdas, latents = interpolate_latents(mu1, mu2, steps=5)
    assert lambdas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert latents.shape == (5, 3)
    assert torch.equal(latents[0], mu2)  # lambda = 0: image 2
    assert torch.equal(latents[-1], mu1)  # lambda = 1: image 1
    assert torch.equal(latents[2], (mu1 + mu2) / 2)
    assert torch.allclose(latents[1], 0.25 * mu1 + 0.75 * mu2)


def test_manifold_grid_size_and_order():
    latents = manifold_latents(n=20, span=1.5)
    assert latents.shape == (400, 2)
    grid = latents.view(20, 20, 2)  # [row, column]
    assert grid[0, 0].tolist() == [-1.5, 1.5]  # top left
    assert grid[0, -1].tolist() == [1.5, 1.5]  # top right
    assert grid[-1, 0].tolist() == [-1.5, -1.5]  # bottom left
    assert torch.all(grid[:, 1:, 0] > grid[:, :-1, 0])  # x grows left -> right
    assert torch.all(grid[1:, :, 1] < grid[:-1, :, 1])  # y falls top -> bottom
    assert torch.all(grid[:, :, 1] == grid[:, :1, 1]) and torch.all(grid[:, :, 0] == grid[:1, :, 0])


@needs_mnist
def test_interpolate_job_by_digit(tmp_path):
    model = saved_model(tmp_path, "model")
    ctx = LocalContext(tmp_path, job_id="interp", data_root=DATA_ROOT)
    result = interpolate.run(Interpolate(model="model", from_digit=1, to_digit=7, steps=4), ctx)
    assert (result["from_index"], result["to_index"]) == (2, 0)  # first 1 and first 7 of the test set
    doc = ctx.artifact_json("latents.json")
    test = load_mnist(DATA_ROOT, train=False)
    mu_to, mu_from = model.encode_mu(test.images[[0, 2]])
    assert doc["mu1"] == mu_to.tolist() and doc["mu2"] == mu_from.tolist()
    assert [f["lambda"] for f in doc["frames"]] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert doc["frames"][0]["latent"] == doc["mu2"] and doc["frames"][-1]["latent"] == doc["mu1"]
    with Image.open(tmp_path / "interp" / "interpolation.png") as image:
        assert image.width == 6 * (84 + 4) + 4  # from-original, 4 frames, to-original
        assert image.height > 84


@needs_mnist
def test_sample_job_writes_samples_manifold_and_reconstructions(tmp_path):
    saved_model(tmp_path, "model")
    ctx = LocalContext(tmp_path, job_id="samples", data_root=DATA_ROOT)
    result = sample.run(SampleVAE(model="model", count=64, seed=5), ctx)
    assert result["artifacts"] == ["samples.png", "manifold.png", "reconstructions.png"]
    with Image.open(tmp_path / "samples" / "samples.png") as image:
        assert image.size == (8 * 58 + 2, 8 * 58 + 2)  # 8 x 8 digits drawn 56 px with 2 px gaps
    with Image.open(tmp_path / "samples" / "manifold.png") as image:
        assert image.size == (20 * 30 + 2, 20 * 30 + 2)  # 20 x 20 digits at 28 px with 2 px gaps
    with Image.open(tmp_path / "samples" / "reconstructions.png") as image:
        assert image.height == 2 * 84 + 3 * 4
    again = LocalContext(tmp_path, job_id="samples-again", data_root=DATA_ROOT)
    sample.run(SampleVAE(model="model", count=64, seed=5), again)
    assert (tmp_path / "samples" / "samples.png").read_bytes() == (tmp_path / "samples-again" / "samples.png").read_bytes()


@needs_mnist
def test_no_manifold_beyond_two_latent_dims(tmp_path):
    saved_model(tmp_path, "model3", latent_dims=3)
    ctx = LocalContext(tmp_path, job_id="samples", data_root=DATA_ROOT)
    result = sample.run(SampleVAE(model="model3", count=5, seed=1), ctx)
    assert "manifold.png" not in result["artifacts"]
    assert ctx.existing_artifact("manifold.png") is None


def test_a_missing_model_job_is_a_clear_error(tmp_path):
    ctx = LocalContext(tmp_path, job_id="x", data_root=DATA_ROOT)
    with pytest.raises(FileNotFoundError, match="job nope has no artifact"):
        sample.run(SampleVAE(model="nope"), ctx)
