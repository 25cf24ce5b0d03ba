"""Independent, reproducible random streams keyed by a tuple of values."""

from __future__ import annotations

import hashlib

import torch

_SEED_BITS = 63


def stream_seed(*keys: int | str) -> int:
    """Return a 63-bit seed that depends on every key and on their order.

    Hashing (rather than, say, ``seed + epoch``) keeps the streams for
    ``(seed, epoch)`` and ``(seed + 1, epoch - 1)`` unrelated.
    """
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in keys)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - _SEED_BITS)


def generator(*keys: int | str) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded from ``keys`` (see :func:`stream_seed`)."""
    return torch.Generator().manual_seed(stream_seed(*keys))
