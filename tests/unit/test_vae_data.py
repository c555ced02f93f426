"""MNIST as resident tensors, and choosing test images by digit."""
from pathlib import Path

import pytest
import torch

from genq.core.kinds.interpolate import Interpolate
from genq.core.vae.data import default_data_root, first_index_of_digit, load_mnist
from genq.core.vae.interpolate import choose_indices

DATA_ROOT = default_data_root(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.skipif(not (DATA_ROOT / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {DATA_ROOT}")


@pytest.fixture(scope="module")
def test_split():
    return load_mnist(DATA_ROOT, train=False)


def test_images_are_float_in_unit_range_with_a_channel(test_split):
    assert test_split.images.shape == (10_000, 1, 28, 28)
    assert test_split.images.dtype == torch.float32
    assert test_split.labels.shape == (10_000,)
    assert 0.0 <= test_split.images.min() and test_split.images.max() == 1.0


def test_values_equal_torchvision_to_tensor(test_split):
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    image, label = MNIST(str(DATA_ROOT), train=False, download=True, transform=ToTensor())[7]
    assert torch.equal(test_split.images[7], image)
    assert int(test_split.labels[7]) == label


def test_train_limit_keeps_the_first_images():
    limited = load_mnist(DATA_ROOT, train=True, limit=100)
    full = load_mnist(DATA_ROOT, train=True)
    assert len(limited) == 100
    assert torch.equal(limited.images, full.images[:100])


def test_first_image_of_each_digit_in_test_order(test_split):
    labels = test_split.labels.tolist()
    for digit in range(10):
        expected = next(i for i, label in enumerate(labels) if label == digit)
        assert first_index_of_digit(test_split.labels, digit) == expected
    # the first test images are 7, 2, 1, 0, 4
    assert [first_index_of_digit(test_split.labels, d) for d in (7, 2, 1, 0, 4)] == [0, 1, 2, 3, 4]


def test_missing_digit_is_a_clear_error():
    with pytest.raises(ValueError, match="no image of digit 3"):
        first_index_of_digit(torch.tensor([1, 2]), 3)


def test_choose_indices_by_digit_or_by_index(test_split):
    assert choose_indices(Interpolate(model="m", from_digit=1, to_digit=7), test_split.labels) == (2, 0)
    assert choose_indices(Interpolate(model="m", from_index=5, to_index=9), test_split.labels) == (5, 9)
    assert choose_indices(Interpolate(model="m"), test_split.labels) == (0, 1)
