"""Backpropagation (Rumelhart, Hinton & Williams 1986): exact weight transport.

    δ_l = W_{l+1}ᵀ δ_{l+1} ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

A layer converted with ``bp`` runs PyTorch's own forward and backward; the converted model
computes exactly what the original did. It is the reference every other rule is measured
against.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Feedback, Rule
from .registry import register


class ExactFeedback(Feedback):
    """Errors travel back through W itself."""

    def matrix(self, weight: Tensor) -> None:
        return None


@register
@dataclass
class BP(Rule):
    """Exact backpropagation (no options)."""

    name = "bp"

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return ExactFeedback()
