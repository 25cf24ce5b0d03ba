"""Kolen-Pollack (Kolen & Pollack 1994; Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019,
arXiv 1904.05391).

Errors travel back through a learned B; forward and feedback weights get the *same*
update and the same weight decay:

    δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l)
    W_l ← λ W_l − η ΔW_l,   B_l ← λ B_l − η ΔW_l,   ΔW_l = δ_l x_lᵀ

so W_l − B_l ← λ (W_l − B_l) and B converges to W. Here B is an ``nn.Parameter`` whose
gradient is set to W's gradient. Put B in W's parameter group (same lr, same decay; build the
optimizer after ``convert``): then W − B = c_t (W₀ − B₀) with one scalar c_t under SGD (any
momentum, Nesterov, L2 decay), AdamW and Muon (decoupled decay), and any optimizer without
decay (c_t = 1: B never reaches W). Not under Adam (or RMSprop, Adagrad) with coupled L2
``weight_decay``: λW and λB enter the gradients, which those normalise entry by entry, so W and
B get different updates (use AdamW). Measured and tested: docs/rules.md#kp.

Options
-------
init : how B starts, as for FA (``"kaiming"`` default, ``"xavier"``).
constrain_weights : if True, W (not B) is rescaled in place to the Frobenius norm it had at
    conversion, once per step (BioTorch's option); W − B then no longer just decays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import (BOOLS, Feedback, RandomInitRule, check_choice, grown, random_like,
                   resize_norm, resized_warning)
from .registry import register


class LearnedFeedback(Feedback):
    """B as a parameter: it receives the layer's weight gradient as its own."""

    def __init__(self, B: Tensor, init: str = "kaiming", constrain_weights: Tensor | None = None) -> None:
        super().__init__(constrain_weights)
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
        resize_norm(self, weight)
        resized_warning(self, old, self.B.shape)

    def matrix(self, weight: Tensor) -> Tensor:
        return self.B


@register
@dataclass
class KP(RandomInitRule):
    """Kolen-Pollack: B learned with W's update and weight decay, so B → W."""

    name = "kp"
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch); B is left alone

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return LearnedFeedback(random_like(weight, self.init), self.init, weight if self.constrain_weights else None)
