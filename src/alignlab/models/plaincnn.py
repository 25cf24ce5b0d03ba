"""A plain convolutional network of variable depth: no skip connections, no bottlenecks.

Boeshertz, Pascanu & Clopath (arXiv 2606.11123) report that feedback alignment trains MLPs and
very shallow CNNs but falls behind BP as convolutional depth grows, and that orthogonalised
updates (Muon) and hidden activity normalisation close the gap. This net is the depth axis for
that claim: every hidden layer is the same 3×3 convolution (``width`` channels, padding 1) →
norm → activation, so only the number of layers changes. The resolution halves (2×2 max-pool)
after conv 1 and after conv ``depth // 2 + 1``; then a Linear head on the globally averaged
channels (``head="gap"``) or on every position's channels (``head="flatten"``: width·(H/4)·(W/4)
features, a head with as much to learn as a LeNet's first fc layer). Initialisation: PyTorch's
defaults.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .checks import image_shape, make_activation, positive_int
from .norm import check_norm, make_norm


HEADS = ("gap", "flatten")


def pooled_after(depth: int) -> tuple[int, ...]:
    """The convs (1-based) followed by a 2×2 max-pool: the first and the one after the middle."""
    return tuple(sorted({1, depth // 2 + 1} & set(range(1, depth + 1))))


class PlainCNN(nn.Sequential):
    """``[conv3×3 → norm → activation (→ pool)] × depth → (global average pool →) flatten → linear``.

    Modules: ``conv1``, ``norm1``, ``act1``, ``pool1``, …, (``gap``,) ``flatten``, ``head``.
    """

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, *,
                 norm: str = "none",         # hidden-activity norm: none | batch | layer | rms
                 depth: int = 4,             # number of conv layers (>= 1)
                 width: int = 16,            # channels of every conv layer
                 activation: str = "relu",   # relu | tanh | gelu
                 head: str = "gap"):         # gap: Linear(width); flatten: Linear(width · H/4 · W/4)
        channels, height, width_px = image_shape("plaincnn", in_shape)
        positive_int("plaincnn", "num_classes", num_classes)
        check_norm(norm)
        positive_int("plaincnn", "depth", depth)
        positive_int("plaincnn", "width", width)
        make_activation("plaincnn", activation)
        if head not in HEADS:
            raise ValueError(f"plaincnn: head={head!r} is not valid; choose one of {', '.join(HEADS)}")
        pools = pooled_after(depth)
        if min(height, width_px) < 2 ** len(pools):
            raise ValueError(f"plaincnn: images of {height}×{width_px} are too small for {len(pools)} 2×2 pools")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, depth + 1):
            layers[f"conv{i}"] = nn.Conv2d(channels if i == 1 else width, width, 3, padding=1)
            layers[f"norm{i}"] = make_norm(norm, width, conv=True)
            layers[f"act{i}"] = make_activation("plaincnn", activation)
            if i in pools:
                layers[f"pool{i}"] = nn.MaxPool2d(2)
        features = width
        if head == "gap":
            layers["gap"] = nn.AdaptiveAvgPool2d(1)
        else:
            for _ in pools:
                height, width_px = height // 2, width_px // 2
            features = width * height * width_px
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(features, num_classes)
        super().__init__(layers)
