"""Checkpoints: a run's whole state after an epoch, saved atomically and loaded safely.

Where a run keeps its checkpoint is `alignlab.train.rundir`'s business (``checkpoint.pt``);
this module only turns a state dict into a file and back. The write goes through
`alignlab.files`, so a crash (kill -9 included) leaves either the old checkpoint or the new.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..files import atomic_write_bytes


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a damaged file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}: the run did not finish an epoch; start it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a damaged zip/pickle
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(err).__name__})") from None
