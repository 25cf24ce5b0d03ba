"""How many dimensions a signal really uses.

Error signals collapse onto few directions under FA (Boeshertz, Pascanu & Clopath 2026,
arXiv 2606.11123); these numbers say how far. Every function takes a batch of signals:
a (samples × features) matrix, or any tensor that :func:`as_samples` turns into one
(``conv=True`` for conv maps). Effective and stable rank are of the matrix itself;
the participation ratio is of the covariance of the centred samples.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_samples(x: Tensor, conv: bool = False) -> Tensor:
    """A (samples × features) float matrix.

    ``conv=True``: an ``(N, C, *spatial)`` map, every sample and position counted as a
    sample of C channels. Otherwise the last dimension is the features and all leading ones
    are samples (tokens of a sequence count as samples). A 1-D tensor is one sample.
    """
    if conv:
        return x.movedim(1, -1).reshape(-1, x.shape[1]).float()
    return x.reshape(-1, x.shape[-1]).float()


def singular_values(x: Tensor, conv: bool = False) -> Tensor:
    """Singular values, largest first, as √eig of the smaller Gram matrix (XᵀX or XXᵀ) in
    float64: several times cheaper than an SVD, and exact enough for these sums."""
    m = as_samples(x, conv).double()
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def _effective_rank(s: Tensor) -> float:
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _stable_rank(s: Tensor) -> float:
    return 0.0 if s[0] == 0 else float((s**2).sum() / s[0] ** 2)


def _participation_ratio(centred_s: Tensor) -> float:
    lam = centred_s**2  # eigenvalues of mᵀm for the centred samples, proportional to C's
    denom = (lam**2).sum()
    return 0.0 if denom == 0 else float(lam.sum() ** 2 / denom)


def all_ranks(x: Tensor, conv: bool = False) -> dict[str, float]:
    """Effective rank, stable rank and participation ratio from two eigen-decompositions."""
    m = as_samples(x, conv)
    s, c = singular_values(m), singular_values(m - m.mean(dim=0, keepdim=True))
    return {"erank": _effective_rank(s), "srank": _stable_rank(s), "pr": _participation_ratio(c)}


def effective_rank(x: Tensor, conv: bool = False) -> float:
    """Roy & Vetterli 2007: exp(−Σ pᵢ log pᵢ) with pᵢ = σᵢ / Σⱼ σⱼ (0 for a zero matrix)."""
    return _effective_rank(singular_values(x, conv))


def stable_rank(x: Tensor, conv: bool = False) -> float:
    """Σσᵢ² / σ₁² = ‖X‖_F² / ‖X‖₂² (0 for a zero matrix)."""
    return _stable_rank(singular_values(x, conv))


def participation_ratio(x: Tensor, conv: bool = False) -> float:
    """tr(C)² / ‖C‖_F² = (Σλᵢ)² / Σλᵢ², C the feature covariance of the centred samples."""
    m = as_samples(x, conv)
    return _participation_ratio(singular_values(m - m.mean(dim=0, keepdim=True)))
