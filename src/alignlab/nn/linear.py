"""``nn.Linear`` with a rule's feedback path (inputs with any number of leading dims)."""

from __future__ import annotations

from torch import Tensor, nn

from .functional import feedback_linear


class FeedbackLinear(nn.Linear):
    """An ``nn.Linear`` whose backward sends errors through ``self.feedback``.

    Made by :func:`alignlab.convert` from an existing ``nn.Linear`` (its class is swapped in
    place, so parameters, hooks and optimizer references are kept). Its weight and bias keep
    their state-dict keys; the feedback tensors live under ``feedback.``.
    """

    feedback: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return feedback_linear(x, self.weight, self.bias, self.feedback)


class TransposedLinearMixin:
    """Twin forward of a layer that stores its weight transposed, y = x W + b with W (in, out)
    (transformers' ``Conv1D``): its feedback mirrors Wᵀ, the (out, in) weight of the same map."""

    feedback: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return feedback_linear(x, self.weight.mT, self.bias, self.feedback)
