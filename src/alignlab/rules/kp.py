"""Kolen-Pollack (Kolen & Pollack 1994; Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019,
arXiv 1904.05391).

Errors travel back through a learned B; forward and feedback weights get the *same*
update and the same weight decay:

    δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l)
    W_l ← λ W_l − η ΔW_l,   B_l ← λ B_l − η ΔW_l,   ΔW_l = δ_l x_lᵀ

so W_l − B_l ← λ (W_l − B_l) and B converges to W. Here B is an ``nn.Parameter`` whose
gradient is set to W's gradient, so *any* torch optimizer (SGD, Adam, AdamW, Muon) gives it
W's update, provided B sits in the same parameter group as W and weight decay is on.
Build the optimizer after ``convert`` so that it sees B.

Options
-------
init : how B starts, as for FA (``"kaiming"`` default, ``"xavier"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Feedback, RandomInitRule, grown, random_like, resized_warning
from .registry import register


class LearnedFeedback(Feedback):
    """B as a parameter: it receives the layer's weight gradient as its own."""

    def __init__(self, B: Tensor, init: str = "kaiming") -> None:
        super().__init__()
        self.B = nn.Parameter(B)
        self.init = init

    @property
    def weight_shape(self) -> torch.Size:
        return self.B.shape

    def resize(self, weight: Tensor) -> None:
        """Existing entries kept, new ones drawn as at conversion (a new parameter: rebuild the
        optimizer)."""
        old = self.B.shape
        self.B = nn.Parameter(grown(self.B.detach(), random_like(weight, self.init)))
        resized_warning(self, old, self.B.shape)

    def matrix(self, weight: Tensor) -> Tensor:
        return self.B


@register
@dataclass
class KP(RandomInitRule):
    """Kolen-Pollack: B learned with W's update and weight decay, so B → W."""

    name = "kp"

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return LearnedFeedback(random_like(weight, self.init), self.init)
