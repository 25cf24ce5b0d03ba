"""Hidden-activity normalisation, the one ``norm`` knob every reference model takes.

Boeshertz, Pascanu & Clopath (arXiv 2606.11123) find that feedback alignment's error signal
has low rank, and that normalising hidden activity raises the rank of its updates. ``norm``
picks that normalisation for every hidden layer of a model, never for its output:

=========  ==========================================  ==========================================
kind       vectors ``(..., C)``, ``conv=False``         maps ``(N, C, H, W)``, ``conv=True``
=========  ==========================================  ==========================================
``none``   ``nn.Identity``                              ``nn.Identity``
``batch``  :class:`FeatureBatchNorm` (``BatchNorm1d``)  ``nn.BatchNorm2d``
``layer``  ``nn.LayerNorm(C)``                          ``nn.GroupNorm(1, C)``: over C, H and W
``rms``    ``nn.RMSNorm(C)``                            :class:`ChannelRMSNorm`: over C per pixel
=========  ==========================================  ==========================================

For vectors every kind normalises the last dimension, so the same module serves an MLP's
``(N, C)`` activity and a transformer's ``(N, tokens, C)`` activity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS = ("none", "batch", "layer", "rms")

EPS = 1e-5  # LayerNorm's and BatchNorm's default; the RMS norms use it too


def check_norm(kind: object) -> str:
    """``kind`` if it names a norm, else a ValueError listing :data:`NORMS`."""
    if not isinstance(kind, str) or kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; valid norms: {', '.join(NORMS)}")
    return kind


class FeatureBatchNorm(nn.BatchNorm1d):
    """Batch norm of the last dimension, statistics over every other one.

    On ``(N, C)`` input it is exactly ``nn.BatchNorm1d(C)``; on ``(N, L, C)`` (tokens) it
    treats the N·L rows as the batch, where ``nn.BatchNorm1d`` would take L as the channels.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return super().forward(x)
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of a feature map, separately at each position.

    y[n, c, p] = x[n, c, p] / sqrt(mean_c x[n, c, p]² + eps) · g[c]: the per-pixel
    counterpart of ``nn.RMSNorm`` on vectors (Zhang & Sennrich 2019), with a learned gain g
    and no bias. Works for any number of spatial dimensions after the channel one.
    """

    def __init__(self, channels: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        gain = self.weight.view(1, -1, *([1] * (x.dim() - 2)))
        return x * scale * gain

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def make_norm(kind: str, channels: int, *, conv: bool) -> nn.Module:
    """The ``kind`` norm (one of :data:`NORMS`) for ``channels`` features.

    ``conv=True`` for ``(N, C, H, W)`` feature maps, ``conv=False`` for vectors whose last
    dimension holds the features.
    """
    check_norm(kind)
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels) if conv else FeatureBatchNorm(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels, eps=EPS) if conv else nn.LayerNorm(channels, eps=EPS)
    return ChannelRMSNorm(channels) if conv else nn.RMSNorm(channels, eps=EPS)


def conv_bias(kind: str) -> bool:
    """Whether a conv or linear layer feeding a ``kind`` norm should have its own bias.

    Batch and layer norm subtract a mean and add their own shift, so a bias before them does
    nothing; with no norm, or an RMS norm (no mean removed, no shift), the layer keeps one.
    """
    return check_norm(kind) in ("none", "rms")
