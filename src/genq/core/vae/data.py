"""MNIST as resident tensors: read once, converted to float32 in [0, 1] once, kept on the device."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

DATA_ROOT_ENV = "GENQ_DATA_ROOT"


@dataclass(frozen=True)
class MNISTSplit:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1], on the device
    labels: torch.Tensor  # (N,) int64, on the device

    def __len__(self) -> int:
        return self.images.size(0)


def default_data_root(repo_root: Path) -> Path:
    """$GENQ_DATA_ROOT, else the checkout's sibling `shared/data` (benchmarks and tests)."""
    return Path(os.environ.get(DATA_ROOT_ENV) or Path(repo_root).resolve().parent / "shared" / "data")


def load_mnist(root: Path | str, train: bool, device: str | torch.device = "cpu", limit: int | None = None) -> MNISTSplit:
    """The training or test split; `limit` keeps the first `limit` images (in file order).

    The values equal torchvision's ToTensor (uint8 / 255 in float32), so losses match the seed's.
    """
    from torchvision.datasets import MNIST  # imported here: only data loading needs torchvision

    try:
        dataset = MNIST(str(root), train=train, download=True)
    except RuntimeError as exc:  # torchvision's "Error downloading ...": no files and no network
        raise FileNotFoundError(
            f"MNIST is not under {Path(root) / 'MNIST' / 'raw'} and could not be downloaded "
            f"({' '.join(str(exc).split())[:160]}): set GENQ_DATA_ROOT to a folder that holds MNIST/raw"
        ) from exc
    data, targets = dataset.data, dataset.targets  # (N, 28, 28) uint8, (N,) int64
    if limit is not None:
        data, targets = data[:limit], targets[:limit]
    images = data.to(device).unsqueeze(1).to(torch.float32).div_(255)  # (N, 1, 28, 28)
    return MNISTSplit(images=images, labels=targets.to(device))


def first_index_of_digit(labels: torch.Tensor, digit: int) -> int:
    """Index of the first image labelled `digit`, in dataset order."""
    hits = (labels == digit).nonzero()
    if hits.numel() == 0:
        raise ValueError(f"no image of digit {digit} in this split")
    return int(hits[0, 0])
