"""Diagnostics: alignment angles, ranks of signals, representational similarity.

Pure functions on tensors (``rank``, ``similarity``) and measurements on a model
(``alignment``) that leave it exactly as it was.
"""

from .alignment import angle, gradient_alignment, measure_alignment, weight_alignment
from .rank import effective_rank, participation_ratio, stable_rank
from .similarity import MinibatchCKA, cka, rdm, rsa

__all__ = [
    "MinibatchCKA",
    "angle",
    "cka",
    "effective_rank",
    "gradient_alignment",
    "measure_alignment",
    "participation_ratio",
    "rdm",
    "rsa",
    "stable_rank",
    "weight_alignment",
]
