"""Read CIFAR-10 and CIFAR-100 in their binary ("for C programs") formats.

Each file is a run of fixed-size records: the label byte(s), then 3072 pixel
bytes, the 32x32 red plane, then green, then blue, each plane row-major.

* CIFAR-10 (``cifar-10-batches-bin/``): ``data_batch_1.bin`` ... ``data_batch_5.bin``
  and ``test_batch.bin``; records of 1 label byte + 3072 bytes.
* CIFAR-100 (``cifar-100-binary/``): ``train.bin`` and ``test.bin``; records of
  1 coarse-label byte + 1 fine-label byte + 3072 bytes.  The fine label is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DatasetError
from .rawfile import read_maybe_gzip

CHANNELS, SIDE = 3, 32
PIXELS = CHANNELS * SIDE * SIDE

Split = tuple[torch.Tensor, torch.Tensor]
Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its files and how its records are laid out."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int  # bytes before the pixels
    label_index: int  # which of them is the label used
    num_classes: int

    @property
    def record_size(self) -> int:
        return self.label_bytes + PIXELS

    @property
    def files(self) -> tuple[str, ...]:
        """Every file, relative to the dataset directory."""
        return tuple(f"{self.folder}/{f}" for f in self.train_files + self.test_files)


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test_files=("test_batch.bin",),
    label_bytes=1,
    label_index=0,
    num_classes=10,
)
CIFAR100 = CifarLayout(
    folder="cifar-100-binary",
    train_files=("train.bin",),
    test_files=("test.bin",),
    label_bytes=2,
    label_index=1,  # byte 0 is the coarse (20-class) label, byte 1 the fine one
    num_classes=100,
)


def read_cifar_dir(directory: Path, layout: CifarLayout) -> Splits:
    """Return ``(train_x, train_y, test_x, test_y)``: uint8 ``(N, 3, 32, 32)``, int64 labels."""
    base = directory / layout.folder
    train_x, train_y = _read_files([base / f for f in layout.train_files], layout)
    test_x, test_y = _read_files([base / f for f in layout.test_files], layout)
    return train_x, train_y, test_x, test_y


def read_cifar_file(path: Path, layout: CifarLayout) -> Split:
    """Parse one binary CIFAR file into images ``(N, 3, 32, 32)`` and labels ``(N,)``."""
    data = read_maybe_gzip(_existing(path), "CIFAR")
    size = layout.record_size
    if len(data) == 0 or len(data) % size != 0:
        raise DatasetError(
            f"{path}: expected a whole number of {size}-byte records, found {len(data)} bytes"
        )
    records = torch.frombuffer(data, dtype=torch.uint8).view(-1, size)
    labels = records[:, layout.label_index].long()
    images = records[:, layout.label_bytes :].reshape(-1, CHANNELS, SIDE, SIDE).clone()
    _check_labels(path, labels, layout.num_classes)
    return images, labels


def _read_files(paths: list[Path], layout: CifarLayout) -> Split:
    parts = [read_cifar_file(p, layout) for p in paths]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _existing(path: Path) -> Path:
    """``path``, or ``path.gz`` when only the gzipped file exists."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.is_file() else path


def _check_labels(path: Path, labels: torch.Tensor, num_classes: int) -> None:
    top = int(labels.max())
    if top >= num_classes:
        raise DatasetError(f"{path}: expected labels in 0..{num_classes - 1}, found {top}")
