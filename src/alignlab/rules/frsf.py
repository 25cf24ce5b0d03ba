"""Fixed random-magnitude sign-concordant feedback, frSF (Moskovitz, Litwin-Kumar & Abbott
2018, arXiv 1812.06488):

    B_l = |R_l| ⊙ sign(W_l),   R_l drawn once and kept

R is stored as a buffer; only the signs follow W. With ``init="normal"`` this is Lance & Kieu
2026's "uSF Init", B_t = |B₀| ⊙ sign(W_t) with B₀ ~ N(0, σ²) (σ = 0.1 in their runs).

Options
-------
init : how R is drawn: ``"kaiming"`` (default) U(±1/√fan_in), ``"xavier"``
    U(±√(6/(fan_in+fan_out))), as for FA's B; ``"normal"`` N(0, std²).
std : σ of ``init="normal"`` (default 0.1; unused otherwise).
constrain_weights : if True, W is rescaled in place to the Frobenius norm it had at
    conversion, once per step before the forward uses it (BioTorch's option).

Sources, choices and measurements: docs/rules.md#frsf
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import BOOLS, Feedback, RandomInitRule, check_choice, check_drawn_init, draw_like, grown, resize_norm
from .registry import register
from .sign import SignFeedback


class FixedMagnitudeSignFeedback(SignFeedback):
    def __init__(self, R: Tensor, init: str = "kaiming", std: float = 0.1,
                 constrain_weights: Tensor | None = None) -> None:
        super().__init__(constrain_weights)
        self.register_buffer("R", R.abs())
        self.init, self.std = init, std

    @property
    def weight_shape(self) -> torch.Size:
        return self.R.shape

    def resize(self, weight: Tensor) -> None:
        """Existing magnitudes kept, new ones drawn as at conversion."""
        self.R = grown(self.R, draw_like(weight, self.init, self.std).abs())
        resize_norm(self, weight)

    def magnitudes(self, weight: Tensor) -> Tensor:
        return self.R


@register
@dataclass
class FRSF(RandomInitRule):
    """frSF: B = |R| ⊙ sign(W), R fixed."""

    name = "frsf"
    init: str = "kaiming"  # "kaiming" U(±1/√fan_in) | "xavier" U(±√(6/(fan_in+fan_out))) | "normal" N(0, std²)
    std: float = 0.1  # σ of init="normal" (Lance & Kieu's uSF Init: 0.1)
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch)

    def __post_init__(self) -> None:
        check_drawn_init(self.name, self.init, self.std)
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return FixedMagnitudeSignFeedback(draw_like(weight, self.init, self.std), self.init, self.std,
                                          weight if self.constrain_weights else None)
