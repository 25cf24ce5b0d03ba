"""Feedback layers and their autograd functions."""

from .attention import FeedbackMultiheadAttention
from .conv import FeedbackConv1d, FeedbackConv2d, FeedbackConv3d
from .functional import feedback_conv, feedback_linear
from .linear import FeedbackLinear
from .mode import exact, exact_enabled

__all__ = [
    "FeedbackConv1d",
    "FeedbackConv2d",
    "FeedbackConv3d",
    "FeedbackLinear",
    "FeedbackMultiheadAttention",
    "exact",
    "feedback_conv",
    "feedback_linear",
    "exact_enabled",
]
