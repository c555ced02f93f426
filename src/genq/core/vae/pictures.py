"""The VAE jobs' PNG artifacts: reconstructions, loss curve, sample grids, interpolation strips."""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from genq.core.images import Chart, Series, gray_image, grid, labelled_grid, line_chart, png_bytes
from genq.core.vae.model import VAE

SCALE = 3  # each 28x28 digit is drawn 84x84
RECONSTRUCTION_COUNT = 10


def digit_images(batch: torch.Tensor, scale: int = SCALE) -> list[Image.Image]:
    """(B, 1, 28, 28) values in [0, 1] -> B grayscale images."""
    return [gray_image(x[0], scale) for x in batch.detach().float().cpu()]


@torch.inference_mode()
def reconstructions_png(model: VAE, images: torch.Tensor) -> bytes:
    """Test images (top row) above their reconstructions from mu (bottom row)."""
    model.eval()
    recon, _, _ = model(images)
    table = labelled_grid([digit_images(images), digit_images(recon)], row_labels=["test image", "reconstruction"])
    return png_bytes(table)


def grid_png(batch: torch.Tensor, columns: int) -> bytes:
    return png_bytes(grid(digit_images(batch, scale=2 if columns <= 10 else 1), columns=columns))


def strip_png(batch: torch.Tensor, captions: Sequence[str]) -> bytes:
    return png_bytes(labelled_grid([digit_images(batch)], column_labels=captions))


def loss_png(train_loss_per_image: Sequence[float], test_loss_per_image: float | None) -> bytes:
    epochs = list(range(1, len(train_loss_per_image) + 1))
    chart = Chart(title="VAE loss (BCE + beta*KL) per image", x_label="epoch", y_label="loss per image (nats)", integer_x=True)
    chart.series.append(Series("train", epochs, list(train_loss_per_image)))
    if test_loss_per_image is not None:
        chart.series.append(Series(f"test after epoch {len(epochs)}: {test_loss_per_image:.2f}",
                                   [len(epochs)], [test_loss_per_image], markers_only=True))
    return png_bytes(line_chart(chart))
