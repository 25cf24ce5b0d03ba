"""The CIFAR-10 ResNets of He, Zhang, Ren & Sun (2016), "Deep residual learning for image
recognition", arXiv 1512.03385, §4.2: ResNet-20, -32 and -56 (6n + 2 layers, n = 3, 5, 9).

    conv 3×3, 16 → norm → ReLU
    → n blocks at 16 channels → n blocks at 32 (stride 2 first) → n blocks at 64 (stride 2 first)
    → global average pool → FC classes

Blocks, shortcuts and initialisation: :mod:`alignlab.models.resnet_block`. The default
shortcut is option A (zero padding), as in the paper's CIFAR experiments and in BioTorch's
resnet20 (jsalbert/biotorch, ``biotorch/models/small_resnet.py``); with ``norm="batch"``
ResNet-20 then has 269,722 parameters and ResNet-56 853,018 for 10 classes, the paper's
0.27M and 0.85M (Table 6). The paper's network is the ``norm="batch"`` one: ``build``'s
default ``norm="none"`` has no normalisation, and its convolutions get biases instead.
Without normalisation nothing holds the residual sums down: with He initialisation each
block roughly doubles the activity's variance, so at initialisation ResNet-20's logits are
of order 10 and ResNet-56's of order 10⁴. That is the un-normalised baseline as it is.
"""

from __future__ import annotations

from torch import Tensor, nn

from .checks import image_shape, one_of, positive_int
from .norm import check_norm, conv_bias, make_norm
from .resnet_block import SHORTCUTS, init_resnet, stage

WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images. Modules: ``conv1``, ``norm1``, ``act1``, ``layer1``-
    ``layer3`` (Sequentials of blocks), ``pool``, ``flatten``, ``fc``."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *, blocks_per_stage: int,
                 norm: str = "none",      # hidden-activity norm: none | batch | layer | rms
                 shortcut: str = "A"):    # A: zero-padding identity | B: 1×1 conv + norm projection
        super().__init__()
        positive_int("resnet", "blocks_per_stage", blocks_per_stage)
        name = f"resnet{6 * blocks_per_stage + 2}"
        channels, _, _ = image_shape(name, in_shape)
        positive_int(name, "num_classes", num_classes)
        check_norm(norm)
        one_of(name, "shortcut", shortcut, SHORTCUTS)

        self.conv1 = nn.Conv2d(channels, WIDTHS[0], 3, padding=1, bias=conv_bias(norm))
        self.norm1 = make_norm(norm, WIDTHS[0], conv=True)
        self.act1 = nn.ReLU()
        self.layer1 = stage(WIDTHS[0], WIDTHS[0], blocks_per_stage, 1, norm=norm, shortcut=shortcut)
        self.layer2 = stage(WIDTHS[0], WIDTHS[1], blocks_per_stage, 2, norm=norm, shortcut=shortcut)
        self.layer3 = stage(WIDTHS[1], WIDTHS[2], blocks_per_stage, 2, norm=norm, shortcut=shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(WIDTHS[2], num_classes)
        init_resnet(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))
