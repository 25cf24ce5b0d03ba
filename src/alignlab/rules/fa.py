"""Feedback Alignment (Lillicrap, Cownden, Tweed & Akerman 2016, Nat. Commun. 7:13276).

Errors travel back through a fixed random matrix B_l instead of W_lᵀ:

    δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

(B here is stored shaped like W, so the layer's input gradient is ``grad_out @ B``.) The
weight update is the true local one; the forward weights come to align with B.

Options
-------
init : ``"kaiming"`` (default) draws B from the distribution PyTorch gives a fresh layer's
    weight, U(±1/√fan_in); ``"xavier"`` from U(±√(6/(fan_in+fan_out))) as BioTorch does.
match_norm : if True, B is rescaled every step to W's Frobenius norm (‖B‖ = ‖W‖), so the
    backward signal grows and shrinks with the forward weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Feedback, RandomInitRule, StepCache, grown, random_like
from .registry import register


class FixedFeedback(Feedback):
    """A fixed random B (a buffer: saved in state dicts, never trained)."""

    def __init__(self, B: Tensor, match_norm: bool = False, init: str = "kaiming") -> None:
        super().__init__()
        self.register_buffer("B", B)
        self.match_norm, self.init = match_norm, init
        self._cache = StepCache()

    @property
    def weight_shape(self) -> torch.Size:
        return self.B.shape

    def resize(self, weight: Tensor) -> None:
        """Existing entries kept, new ones drawn as at conversion."""
        self.B = grown(self.B, random_like(weight, self.init))

    def matrix(self, weight: Tensor) -> Tensor:
        if not self.match_norm:
            return self.B
        return self._cache.get(weight, lambda w: self.B * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(self.B)))


@register
@dataclass
class FA(RandomInitRule):
    """Feedback Alignment: fixed random feedback B, shaped like W."""

    name = "fa"
    match_norm: bool = False  # rescale B to ‖W‖ every step

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return FixedFeedback(random_like(weight, self.init), self.match_norm, self.init)
