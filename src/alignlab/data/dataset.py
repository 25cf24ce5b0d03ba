"""The in-memory dataset record returned by :func:`alignlab.data.load`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

TASKS = ("classification", "regression")


@dataclass(eq=False)  # tensors have no single truth value; compare fields instead
class Dataset:
    """A train/test split held in memory as tensors.

    Image datasets keep raw ``uint8`` pixels of shape ``(N, C, H, W)`` and the
    per-channel ``mean``/``std`` of pixels scaled to ``[0, 1]``, which
    :func:`alignlab.data.batches` applies batch by batch.  Synthetic datasets
    hold ``float32`` inputs of shape ``(N, d_in)`` and empty ``mean``/``std``.
    Labels are ``int64`` class indices for classification and ``float32``
    ``(N, d_out)`` targets for regression; ``num_classes`` is then ``d_out``.
    """

    name: str
    task: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``train_x.shape[1:]``."""
        return tuple(self.train_x.shape[1:])

    def first(self, n: int) -> "Dataset":
        """The same dataset with only its first ``n`` training samples (the test set whole)."""
        total = self.train_x.shape[0]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
            raise ValueError(f"data.train_subset must be an integer in 1..{total} ({self.name} has {total} "
                             f"training samples) or 0 for all of them; got {n!r}")
        return dataclasses.replace(self, train_x=self.train_x[:n], train_y=self.train_y[:n])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, {self.task}, train {tuple(self.train_x.shape)} "
            f"{_dtype(self.train_x)}, test {tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes})"
        )


def _dtype(tensor: Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
