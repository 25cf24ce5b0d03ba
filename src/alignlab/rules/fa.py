"""Feedback Alignment (Lillicrap, Cownden, Tweed & Akerman 2016, Nat. Commun. 7:13276).

Errors travel back through a fixed random matrix B_l instead of W_lᵀ:

    δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

(B here is stored shaped like W, so the layer's input gradient is ``grad_out @ B``; a conv's
is a transposed conv with the random kernel B, Lance & Kieu 2026's "FA (Toeplitz)".) The
weight update is the true local one; the forward weights come to align with B.

Options
-------
init : ``"kaiming"`` (default) draws B from the distribution PyTorch gives a fresh layer's
    weight, U(±1/√fan_in); ``"xavier"`` from U(±√(6/(fan_in+fan_out))) as BioTorch does;
    ``"normal"`` from N(0, std²) as Lance & Kieu do.
match_norm : if True, B is rescaled every step to W's Frobenius norm (‖B‖ = ‖W‖), so the
    backward signal grows and shrinks with the forward weights.
std : σ of ``init="normal"`` (default 0.1; unused otherwise).
constrain_weights : if True, W is rescaled in place to the Frobenius norm it had at
    conversion, once per step before the forward uses it (BioTorch's option).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import (BOOLS, Feedback, RandomInitRule, StepCache, check_choice, check_drawn_init, constrain_norm,
                   draw_like, grown, hold_norm, resize_norm)
from .registry import register


class FixedFeedback(Feedback):
    """A fixed random B (a buffer: saved in state dicts, never trained)."""

    def __init__(self, B: Tensor, match_norm: bool = False, init: str = "kaiming", std: float = 0.1,
                 constrain_weights: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("B", B)
        self.match_norm, self.init, self.std = match_norm, init, std
        self._cache = StepCache()
        if constrain_weights is not None:
            constrain_norm(self, constrain_weights)

    @property
    def weight_shape(self) -> torch.Size:
        return self.B.shape

    def resize(self, weight: Tensor) -> None:
        """Existing entries kept, new ones drawn as at conversion."""
        self.B = grown(self.B, draw_like(weight, self.init, self.std))
        resize_norm(self, weight)

    def matrix(self, weight: Tensor) -> Tensor:
        hold_norm(self, weight)
        if not self.match_norm:
            return self.B
        return self._cache.get(weight, lambda w: self.B * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(self.B)))


@register
@dataclass
class FA(RandomInitRule):
    """Feedback Alignment: fixed random feedback B, shaped like W."""

    name = "fa"
    init: str = "kaiming"  # "kaiming" U(±1/√fan_in) | "xavier" U(±√(6/(fan_in+fan_out))) | "normal" N(0, std²)
    match_norm: bool = False  # rescale B to ‖W‖ every step
    std: float = 0.1  # σ of init="normal" (Lance & Kieu's FA: 0.01)
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch)

    def __post_init__(self) -> None:
        check_drawn_init(self.name, self.init, self.std)
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return FixedFeedback(draw_like(weight, self.init, self.std), self.match_norm, self.init, self.std,
                             weight if self.constrain_weights else None)
