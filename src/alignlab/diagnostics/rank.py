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
    """Singular values, largest first. A tall matrix (many samples, as conv maps give) goes
    through its small Gram matrix: σ = √eig(XᵀX), in float64."""
    m = as_samples(x, conv)
    if m.shape[0] <= 4 * m.shape[1]:
        return torch.linalg.svdvals(m)
    m = m.double()
    return torch.linalg.eigvalsh(m.T @ m).clamp_min(0).sqrt().flip(0).float()


def effective_rank(x: Tensor, conv: bool = False) -> float:
    """Roy & Vetterli 2007: exp(−Σ pᵢ log pᵢ) with pᵢ = σᵢ / Σⱼ σⱼ (0 for a zero matrix)."""
    s = singular_values(x, conv)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(x: Tensor, conv: bool = False) -> float:
    """Σσᵢ² / σ₁² = ‖X‖_F² / ‖X‖₂² (0 for a zero matrix)."""
    s = singular_values(x, conv)
    return 0.0 if s[0] == 0 else float((s**2).sum() / s[0] ** 2)


def participation_ratio(x: Tensor, conv: bool = False) -> float:
    """tr(C)² / ‖C‖_F² = (Σλᵢ)² / Σλᵢ², C the feature covariance of the centred samples."""
    m = as_samples(x, conv)
    m = m - m.mean(dim=0, keepdim=True)
    lam = singular_values(m) ** 2  # eigenvalues of mᵀm, proportional to C's
    denom = (lam**2).sum()
    return 0.0 if denom == 0 else float(lam.sum() ** 2 / denom)
