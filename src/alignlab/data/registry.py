"""The dataset registry: :func:`names` and :func:`load`.

Image datasets are looked for on disk (see :mod:`alignlab.data.locate`) and,
when absent and ``download=True``, downloaded and verified (see
:mod:`alignlab.data.download`).  ``"teacher"`` is generated in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .cifar import CIFAR10, CIFAR100, read_cifar_dir
from .dataset import Dataset
from .download import download_dataset
from .errors import DatasetError
from .locate import PathLike, download_dir, locate
from .mnist_like import MNIST_FILES, Splits, read_idx_dir
from .teacher import NAME as TEACHER
from .teacher import load_teacher, option_names


@dataclass(frozen=True)
class ImageSpec:
    """How to find and read one image dataset, and its normalisation statistics."""

    files: tuple[str, ...]
    read: Callable[[Path], Splits]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


# Per-channel mean/std of the training pixels scaled to [0, 1], as commonly quoted.
IMAGE_DATASETS: dict[str, ImageSpec] = {
    "mnist": ImageSpec(MNIST_FILES, read_idx_dir, 10, (0.1307,), (0.3081,)),
    "fashion-mnist": ImageSpec(MNIST_FILES, read_idx_dir, 10, (0.2860,), (0.3530,)),
    "kmnist": ImageSpec(MNIST_FILES, read_idx_dir, 10, (0.1918,), (0.3483,)),
    "cifar10": ImageSpec(
        CIFAR10.files,
        partial(read_cifar_dir, layout=CIFAR10),
        CIFAR10.num_classes,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": ImageSpec(
        CIFAR100.files,
        partial(read_cifar_dir, layout=CIFAR100),
        CIFAR100.num_classes,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def names() -> list[str]:
    """The names :func:`load` accepts."""
    return [*IMAGE_DATASETS, TEACHER]


def load(
    name: str, data_dir: PathLike | None = None, download: bool = True, **options: object
) -> Dataset:
    """Load dataset ``name`` (one of :func:`names`) into memory.

    Image datasets give uint8 ``(N, C, H, W)`` images (C = 1 for the
    MNIST-like ones) and int64 labels.  They are read from ``data_dir`` when
    given, else from the first standard location holding them; when none does
    and ``download`` is true they are downloaded, verified and stored in
    ``data_dir`` (when given) or the user cache.  ``options`` are accepted only
    by ``"teacher"`` (see :mod:`alignlab.data.teacher`), which ignores
    ``data_dir`` and ``download``.

    Raises ``ValueError`` for an unknown name or option and
    :class:`DatasetError` for data that cannot be found, fetched or read.
    """
    if name == TEACHER:
        return load_teacher(**options)
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets are {', '.join(names())}")
    if options:
        raise ValueError(
            f"dataset {name!r} takes no options, got {', '.join(sorted(options))}; "
            f"options ({', '.join(option_names())}) are for {TEACHER!r} only"
        )
    spec = IMAGE_DATASETS[name]
    train_x, train_y, test_x, test_y = spec.read(_find(name, spec, data_dir, download))
    return Dataset(
        name=name,
        task="classification",
        train_x=_with_channels(train_x),
        train_y=train_y,
        test_x=_with_channels(test_x),
        test_y=test_y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
    )


def _find(name: str, spec: ImageSpec, data_dir: PathLike | None, download: bool) -> Path:
    """The directory holding ``name``'s files, downloading them if allowed and needed."""
    try:
        return locate(name, spec.files, data_dir)
    except DatasetError:
        if not download:
            raise
    target = download_dir(name, data_dir)
    try:
        download_dataset(name, target)
    except DatasetError as err:
        raise DatasetError(f"dataset {name!r} is not on disk; {err}") from None
    try:
        return locate(name, spec.files, target)
    except DatasetError as err:
        raise DatasetError(f"downloaded {name!r} into {target}, but {err}") from None


def _with_channels(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, 1, H, W)``; channel-first images are returned as they are."""
    return images.unsqueeze(1) if images.dim() == 3 else images
