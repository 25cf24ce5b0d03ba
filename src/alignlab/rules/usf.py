"""Uniform sign-concordant feedback, uSF (Liao, Leibo & Poggio 2016, arXiv 1510.05067):

    B_l = s · sign(W_l),   δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l)

rebuilt from the current W every step.

Options
-------
scale : s. ``"rms"`` (default) s = ‖W‖_F/√numel(W), so ‖B‖_F = ‖W‖_F: Lance & Kieu 2026's
    "uSF SN" as their code computes it; ``"spectral"`` s = ‖W‖₂/‖sign(W)‖₂, so B's spectral
    norm is W's (their equation read with spectral norms; an SVD of W per step);
    ``"xavier"`` √(2/(fan_in+fan_out)) and ``"kaiming"`` 1/√(3·fan_in), the standard deviation
    of that init, as BioTorch scales uSF (Xiao et al. 2018); a positive number fixes s (1.0 is
    Liao's plain sign(W)).
constrain_weights : if True, W is rescaled in place to the Frobenius norm it had at
    conversion, once per step before the forward uses it (BioTorch's option; Moskovitz et al.
    2018).

Sources, choices and measurements: docs/rules.md#usf
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import BOOLS, Feedback, Rule, check_choice
from .registry import register
from .sign import SignFeedback, check_scale, sign_scale


class UniformSignFeedback(SignFeedback):
    def __init__(self, scale, constrain_weights: Tensor | None = None) -> None:
        super().__init__(constrain_weights)
        self.scale = scale

    def magnitudes(self, weight: Tensor):
        return sign_scale(weight, self.scale)


@register
@dataclass
class USF(Rule):
    """uSF: B = s·sign(W)."""

    name = "usf"
    scale: object = "rms"  # "rms" (‖B‖_F=‖W‖_F) | "spectral" (‖B‖₂=‖W‖₂) | "xavier" | "kaiming" | a positive number
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch)

    def __post_init__(self) -> None:
        check_scale(self.name, self.scale)
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return UniformSignFeedback(self.scale, weight if self.constrain_weights else None)
