"""Feedback layers and their autograd functions."""

from .attention import FeedbackMultiheadAttention
from .conv import FeedbackConv1d, FeedbackConv2d, FeedbackConv3d
from .linear import FeedbackLinear
from .mode import exact, exact_enabled

__all__ = [
    "FeedbackConv1d",
    "FeedbackConv2d",
    "FeedbackConv3d",
    "FeedbackLinear",
    "FeedbackMultiheadAttention",
    "exact",
    "exact_enabled",
]
