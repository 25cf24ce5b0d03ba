"""Fixed random-magnitude sign-concordant feedback, frSF (Moskovitz, Litwin-Kumar & Abbott
2018, arXiv 1812.06488):

    B_l = |R_l| ⊙ sign(W_l),   R_l drawn once and kept

R is drawn like FA's B (``init``: ``"kaiming"`` default or ``"xavier"``) and stored as a
buffer; only the signs follow W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Feedback, RandomInitRule, grown, random_like
from .registry import register
from .sign import SignFeedback


class FixedMagnitudeSignFeedback(SignFeedback):
    def __init__(self, R: Tensor, init: str = "kaiming") -> None:
        super().__init__()
        self.register_buffer("R", R.abs())
        self.init = init

    @property
    def weight_shape(self) -> torch.Size:
        return self.R.shape

    def resize(self, weight: Tensor) -> None:
        """Existing magnitudes kept, new ones drawn as at conversion."""
        self.R = grown(self.R, random_like(weight, self.init).abs())

    def magnitudes(self, weight: Tensor) -> Tensor:
        return self.R


@register
@dataclass
class FRSF(RandomInitRule):
    """frSF: B = |R| ⊙ sign(W), R fixed."""

    name = "frsf"

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return FixedMagnitudeSignFeedback(random_like(weight, self.init), self.init)
