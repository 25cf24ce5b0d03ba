"""Representational similarity between two sets of activations on the same probe inputs.

``x`` (n × p) and ``y`` (n × q) hold one row per probe input (conv maps and token
sequences are flattened per input). Rows must correspond.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rows(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def _check(x: Tensor, y: Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same probe inputs: {x.shape[0]} rows vs {y.shape[0]}")


def _hsic_unbiased(K: Tensor, L: Tensor) -> Tensor:
    """Song et al. 2012's unbiased HSIC estimator on Gram matrices (diagonals zeroed)."""
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    KL = K @ L
    term = KL.trace() + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 * KL.sum() / (n - 2)
    return term / (n * (n - 3))


def cka(x: Tensor, y: Tensor, debiased: bool = False) -> float:
    """Linear CKA (Kornblith, Norouzi, Lee & Hinton 2019).

    Plain: ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred X, Y. Debiased: the same ratio
    with the unbiased HSIC estimator of Song et al. 2012 (as Nguyen, Raghu & Kornblith
    2021 use per minibatch; needs n ≥ 4). Invariant to orthogonal transforms and isotropic
    scaling of either side; 1 for identical inputs.
    """
    _check(x, y)
    x, y = _rows(x), _rows(y)
    if debiased:
        if x.shape[0] < 4:
            raise ValueError(f"debiased CKA needs at least 4 probe inputs, got {x.shape[0]}")
        K, L = x @ x.T, y @ y.T
        return float(_hsic_unbiased(K, L) / (_hsic_unbiased(K, K) * _hsic_unbiased(L, L)).sqrt())
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


class MinibatchCKA:
    """Debiased CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021).

    ``update(x, y)`` per minibatch adds the three unbiased HSIC estimates;
    ``value()`` = ΣHSIC(K,L) / √(ΣHSIC(K,K) ΣHSIC(L,L)).
    """

    def __init__(self) -> None:
        self.kl = self.kk = self.ll = 0.0

    def update(self, x: Tensor, y: Tensor) -> None:
        _check(x, y)
        x, y = _rows(x), _rows(y)
        K, L = x @ x.T, y @ y.T
        self.kl += float(_hsic_unbiased(K, L))
        self.kk += float(_hsic_unbiased(K, K))
        self.ll += float(_hsic_unbiased(L, L))

    def value(self) -> float:
        return self.kl / (self.kk * self.ll) ** 0.5


def rdm(x: Tensor) -> Tensor:
    """Representational dissimilarity matrix: 1 − Pearson correlation between inputs' rows."""
    x = _rows(x)
    x = x - x.mean(1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1 - x @ x.T


def _ranks(v: Tensor) -> Tensor:
    """Ranks with ties given their average rank (as Spearman's rho needs)."""
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(len(v), dtype=v.dtype)
    values, inverse = torch.unique(v, return_inverse=True)
    sums = torch.zeros(len(values), dtype=v.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(values), dtype=v.dtype).index_add_(0, inverse, torch.ones_like(v))
    return (sums / counts)[inverse]


def spearman(a: Tensor, b: Tensor) -> float:
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def rsa(x: Tensor, y: Tensor) -> float:
    """Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008):
    Spearman correlation between the upper triangles of the correlation-distance RDMs."""
    _check(x, y)
    iu = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    return spearman(rdm(x)[iu[0], iu[1]], rdm(y)[iu[0], iu[1]])
