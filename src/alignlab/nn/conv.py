"""``nn.Conv1d/2d/3d`` with a rule's feedback path.

Stride, dilation, groups, bias and every padding mode are supported. Padding that the fused
backward call cannot express (``'same'`` with an even kernel, or a non-zero padding mode) is
done by ``F.pad`` in front of an unpadded conv, exactly as ``nn.ConvNd`` does, so autograd
takes care of it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .functional import feedback_conv


class FeedbackConvMixin:
    """Shared forward of the feedback conv layers."""

    feedback: nn.Module

    def _pads(self) -> tuple[int, ...]:
        """F.pad's amounts (last dim's left, right, then the one before, ...), as nn.ConvNd pads:
        ``'same'`` puts the odd one of an even total on the right."""
        if self.padding == "same":
            totals = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
            pairs = [(t // 2, t - t // 2) for t in totals]
        elif self.padding == "valid":
            pairs = [(0, 0)] * len(self.kernel_size)
        else:
            pairs = [(p, p) for p in self.padding]
        return tuple(a for pair in reversed(pairs) for a in pair)

    def _padded(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """The input (padded by F.pad where needed) and the numeric padding for the conv."""
        n = x.dim() - 2
        if self.padding_mode != "zeros":
            return F.pad(x, self._pads(), mode=self.padding_mode), (0,) * n
        if self.padding == "valid":
            return x, (0,) * n
        if self.padding == "same":
            pads = self._pads()  # (last_left, last_right, ...)
            left, right = pads[0::2], pads[1::2]
            if left == right:
                return x, tuple(reversed(left))
            return F.pad(x, pads), (0,) * n
        return x, tuple(self.padding)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(x)
        return feedback_conv(
            x, self.weight, self.bias, self.feedback, self.stride, padding, self.dilation, self.groups
        )


class FeedbackConv1d(FeedbackConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with a feedback path."""


class FeedbackConv2d(FeedbackConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with a feedback path."""


class FeedbackConv3d(FeedbackConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with a feedback path."""
