"""Reproducible mini-batches with on-the-fly normalisation and augmentation.

:func:`batches` draws everything random for one epoch (the permutation and
the augmentation) from one generator seeded by ``(seed, epoch)``, so epoch
``k`` yields the same batches whether or not epochs ``0..k-1`` ran before it
in the same process: a resumed run sees exactly what an uninterrupted one
would.  Tensors stay on their device; nothing is copied to another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .seeding import generator

PAD = 4  # pixels of zero padding for the random crop
Batch = tuple[Tensor, Tensor]


def batches(
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Return an iterator of ``(inputs, targets)`` mini-batches covering ``x``/``y`` once.

    * ``shuffle``: visit samples in the order of one ``torch.randperm`` drawn
      from the ``(seed, epoch)`` generator (else in stored order).
    * uint8 inputs become float32 in ``[0, 1]``; then, when ``mean``/``std``
      are given (one value, or one per channel ``x.shape[1]``), each channel
      is mapped to ``(v - mean) / std``.  Float inputs with no ``mean``/``std``
      (synthetic data) pass through unchanged.
    * ``augment``: random crop (zero-pad 4 pixels, crop back to size) and
      horizontal flip with probability 0.5, per sample, for ``(N, C, H, W)``
      images, drawn from the same generator.  Padding is applied to the raw
      pixels, before normalisation.
    * ``drop_last``: skip the final batch when it is smaller than ``batch_size``.

    Arguments are checked when this is called, not on the first batch.
    """
    _check(x, y, batch_size, mean, std, augment)
    stats = _channel_stats(x, mean, std)
    gen = generator("batches", seed, epoch)
    return _iterate(x, y, batch_size, stats, shuffle, gen, augment, drop_last)


def normalize_batch(x: Tensor, mean: Sequence[float] = (), std: Sequence[float] = ()) -> Tensor:
    """uint8 -> float in ``[0, 1]``, then ``(v - mean) / std`` per channel (dim 1)."""
    _check_stats(x, mean, std)
    return _normalize(x, _channel_stats(x, mean, std))


def random_crop_flip(images: Tensor, gen: torch.Generator, pad: int = PAD) -> Tensor:
    """Randomly crop (after zero-padding by ``pad``) and h-flip each image of a batch.

    ``images`` is ``(N, C, H, W)`` of any dtype; the result has the same shape
    and dtype.  Offsets in ``0..2*pad`` and flips are drawn from ``gen``; the
    whole batch is gathered with one advanced-indexing operation.
    """
    n, c, h, w = images.shape
    padded = images.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
    padded[:, :, pad : pad + h, pad : pad + w] = images
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = offsets[:, :1] + torch.arange(h)
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(0), cols) + offsets[:, 1:]
    index = (
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    )
    return padded[tuple(i.to(images.device) for i in index)]


def _iterate(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    stats: tuple[Tensor, Tensor] | None,
    shuffle: bool,
    gen: torch.Generator,
    augment: bool,
    drop_last: bool,
) -> Iterator[Batch]:
    n = x.shape[0]
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    order = order.to(x.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        inputs = x[index]
        if augment:
            inputs = random_crop_flip(inputs, gen)
        yield _normalize(inputs, stats), y[index.to(y.device)]


def _normalize(x: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
    """uint8 -> float in [0, 1], then ``(v - mean) / std`` as one multiply and one subtract."""
    pixels = x.dtype == torch.uint8
    if stats is None:
        return x.float().div_(255.0) if pixels else x
    mean, std = (t.to(x.device) for t in stats)
    scale = 1.0 / (std * 255.0) if pixels else 1.0 / std
    out = x.float() if pixels else x * 1.0
    return out.mul_(scale).sub_(mean / std)


def _channel_stats(
    x: Tensor, mean: Sequence[float], std: Sequence[float]
) -> tuple[Tensor, Tensor] | None:
    """``mean``/``std`` as tensors broadcasting over dim 1 of ``x``, or None if absent."""
    if not mean:
        return None
    shape = (1, len(mean)) + (1,) * (x.dim() - 2) if len(mean) > 1 else (1,)
    return _stat_tensor(mean, shape), _stat_tensor(std, shape)


def _stat_tensor(values: Sequence[float], shape: tuple[int, ...]) -> Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(shape)


def _check(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool,
) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batches: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be an integer >= 1, got {batch_size!r}")
    if augment and x.dim() != 4:
        raise ValueError(
            f"batches: augment=True needs images of shape (N, C, H, W), got {tuple(x.shape)}"
        )
    _check_stats(x, mean, std)


def _check_stats(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(std):
        raise ValueError(f"batches: mean has {len(mean)} values but std has {len(std)}")
    channels = x.shape[1] if x.dim() >= 2 else 1
    if len(mean) > 1 and len(mean) != channels:
        raise ValueError(
            f"batches: {len(mean)} mean/std values for {channels} channels "
            f"(x of shape {tuple(x.shape)})"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"batches: std values must be > 0, got {tuple(std)}")
