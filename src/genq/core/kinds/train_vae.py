"""`train-vae`: the seed's convolutional VAE on MNIST. The defaults are the seed's configuration."""
from __future__ import annotations

from pydantic import Field

from genq.core.params import JobParams, Seed

MNIST_TRAIN_SIZE = 60_000


class TrainVAE(JobParams):
    """Train the seed's convolutional VAE on MNIST (defaults: the seed's configuration)."""

    kind = "train-vae"
    run_function = "genq.core.vae.train:run"
    summary = ("test_loss_per_image", "test_loss_per_batch", "seed")
    main_picture = "reconstructions.png"
    main_results = ("reconstructions.png",)  # its loss curve is drawn live from its metrics
    report_figures = {"loss-curves.png": "genq.core.vae.report:loss_curves_figure",
                      "final-loss.png": "genq.core.vae.report:final_loss_figure"}

    latent_dims: int = Field(2, ge=1, le=512, description="Size of the latent space.")
    capacity: int = Field(64, ge=1, le=512, description="Channels c of the first conv layer (the second has 2c).")
    beta: float = Field(1.0, ge=0, le=1000, description="Weight of the KL term.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, le=1, description="Adam weight decay.")
    batch_size: int = Field(128, ge=1, le=MNIST_TRAIN_SIZE, description="Images per training step.")
    epochs: int = Field(30, ge=1, le=1000, description="Passes over the training images.")
    train_limit: int | None = Field(None, ge=1, le=MNIST_TRAIN_SIZE,
                                    description="Train on the first N training images only.")
    seed: Seed = None
