"""Uniform sign-concordant feedback, uSF (Liao, Leibo & Poggio 2016, arXiv 1510.05067):

    B_l = s · sign(W_l),   δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l)

rebuilt from the current W every step. ``scale`` picks s: ``"rms"`` (default) makes
‖B‖_F = ‖W‖_F, ``"xavier"`` uses √(2/(fan_in+fan_out)) as BioTorch does, a number fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Feedback, Rule
from .registry import register
from .sign import SignFeedback, check_scale, sign_scale


class UniformSignFeedback(SignFeedback):
    def __init__(self, scale) -> None:
        super().__init__()
        self.scale = scale

    def magnitudes(self, weight: Tensor):
        return sign_scale(weight, self.scale)


@register
@dataclass
class USF(Rule):
    """uSF: B = s·sign(W)."""

    name = "usf"
    scale: object = "rms"  # "rms" (‖B‖=‖W‖) | "xavier" | a positive number

    def __post_init__(self) -> None:
        check_scale(self.name, self.scale)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return UniformSignFeedback(self.scale)
