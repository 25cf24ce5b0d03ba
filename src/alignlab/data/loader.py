"""Mini-batches over tensors that are already in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, ...]


class TensorLoader:
    """Iterate over aligned tensors in mini-batches.

    Every tensor must have the same first dimension.  With ``shuffle=True``
    each pass draws a fresh permutation from a ``torch.Generator`` seeded
    with ``seed`` (so a loader built with the same seed yields the same
    sequence of epochs), or from torch's global generator if ``seed`` is
    None.  Batches are gathered with one index operation each, never by a
    per-sample Python loop.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        sizes = {t.shape[0] for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"TensorLoader: tensors differ in first dimension: {sorted(sizes)}")
        if batch_size < 1:
            raise ValueError(f"TensorLoader: batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self.tensors[0].shape[0]

    def __len__(self) -> int:
        """Number of batches in one pass."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(t[index] for t in self.tensors)

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=self.generator)
        return torch.arange(self.num_samples)
