"""Load MNIST-style datasets (IDX image and label files): MNIST, Fashion-MNIST, KMNIST.

All three ship the same four files, ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each usually gzipped), with 28x28 uint8 images
and labels ``0..9``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import DatasetError
from .idx import read_idx
from .locate import PathLike, find_file, locate

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
NUM_CLASSES = 10
IMAGE_SIZE = (28, 28)

# Base names; each may be stored gzipped (<name>.gz) or not.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

Split = tuple[torch.Tensor, torch.Tensor]
Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load_fashion_mnist(data_dir: PathLike | None = None) -> Splits:
    """Return ``(train_x, train_y, test_x, test_y)`` for Fashion-MNIST.

    Images are uint8 tensors of shape ``[N, 28, 28]`` (60000 train, 10000
    test in the real data set); labels are int64 class indices in ``0..9``.
    See :mod:`alignlab.data.locate` for where the files are looked for.
    """
    return load_idx_dataset(FASHION_MNIST, data_dir)


def load_idx_dataset(name: str, data_dir: PathLike | None = None) -> Splits:
    """Return ``(train_x, train_y, test_x, test_y)`` of the MNIST-style dataset ``name``.

    ``name`` is the directory name looked for (``"mnist"``, ``"kmnist"``, ...);
    images are uint8 ``[N, 28, 28]``, labels int64 in ``0..9``.
    """
    directory = locate(name, MNIST_FILES, data_dir)
    return read_idx_dir(directory)


def read_idx_dir(directory: Path) -> Splits:
    """Read the four MNIST-style files from ``directory``."""
    train_x, train_y = load_split(directory, TRAIN_IMAGES, TRAIN_LABELS)
    test_x, test_y = load_split(directory, TEST_IMAGES, TEST_LABELS)
    return train_x, train_y, test_x, test_y


def load_split(directory: Path, images_name: str, labels_name: str) -> Split:
    """Read one images/labels pair from ``directory`` and check they agree."""
    images_path = _require(directory, images_name)
    labels_path = _require(directory, labels_name)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_images(images_path, images)
    _check_labels(labels_path, labels)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} and {labels_path}: expected as many labels as images, "
            f"found {images.shape[0]} images and {labels.shape[0]} labels"
        )
    return images, labels.long()


def normalize(
    images: torch.Tensor, mean: float = FASHION_MNIST_MEAN, std: float = FASHION_MNIST_STD
) -> torch.Tensor:
    """Map uint8 pixels to float32 ``(x / 255 - mean) / std``."""
    return images.float().div_(255.0).sub_(mean).div_(std)


def _require(directory: Path, name: str) -> Path:
    path = find_file(directory, name)
    if path is None:
        raise DatasetError(f"{directory}: expected a file {name}.gz or {name}, found neither")
    return path


def _check_images(path: Path, images: torch.Tensor) -> None:
    found = f"{images.dtype} {tuple(images.shape)}"
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != IMAGE_SIZE:
        raise DatasetError(f"{path}: expected uint8 images of shape (N, 28, 28), found {found}")


def _check_labels(path: Path, labels: torch.Tensor) -> None:
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        found = f"{labels.dtype} {tuple(labels.shape)}"
        raise DatasetError(f"{path}: expected a 1-D uint8 label array, found {found}")
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(
            f"{path}: expected labels in 0..{NUM_CLASSES - 1}, found {int(labels.max())}"
        )
