"""ResNet-18 (He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition",
arXiv 1512.03385, Table 1), with the usual small-image stem.

    stem → 2 blocks at 64 → 2 at 128 (stride 2) → 2 at 256 (stride 2) → 2 at 512 (stride 2)
    → global average pool → FC classes

Stems (option ``stem``): ``imagenet`` is the paper's conv 7×7/2, 64 → norm → ReLU → max-pool
3×3/2; ``small`` is conv 3×3/1, 64 → norm → ReLU with no max-pool, the common CIFAR
adaptation, which keeps a 32×32 image at 32×32 into the first stage; ``auto`` (the
default) picks ``small`` when both H and W are at most 64, else ``imagenet``. Shortcut option
B (1×1 conv + norm projection where the shape changes) is the default, as in the usual
ImageNet ResNet-18; with ``norm="batch"`` it has 11,689,512 parameters for 1000 classes
(torchvision's count) and 11,173,962 with the small stem for 10 classes.
Blocks and initialisation: :mod:`alignlab.models.resnet_block`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .checks import image_shape, one_of, positive_int
from .norm import check_norm, conv_bias, make_norm
from .resnet_block import SHORTCUTS, init_resnet, stage

STEMS = ("auto", "small", "imagenet")
WIDTHS = (64, 128, 256, 512)
SMALL_MAX = 64  # "auto" uses the small stem up to this height and width


class ResNet18(nn.Module):
    """ResNet-18. Modules: ``stem`` (``conv``, ``norm``, ``act``[, ``pool``]), ``layer1``-
    ``layer4``, ``pool``, ``flatten``, ``fc``."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *,
                 norm: str = "none",      # hidden-activity norm: none | batch | layer | rms
                 shortcut: str = "B",     # B: 1×1 conv + norm projection | A: zero-padding identity
                 stem: str = "auto"):     # auto | small (3×3/1, no max-pool) | imagenet (7×7/2 + max-pool)
        super().__init__()
        channels, height, width = image_shape("resnet18", in_shape)
        positive_int("resnet18", "num_classes", num_classes)
        check_norm(norm)
        one_of("resnet18", "shortcut", shortcut, SHORTCUTS)
        one_of("resnet18", "stem", stem, STEMS)
        if stem == "auto":
            stem = "small" if max(height, width) <= SMALL_MAX else "imagenet"

        bias = conv_bias(norm)
        if stem == "small":
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(channels, WIDTHS[0], 3, padding=1, bias=bias),
                norm=make_norm(norm, WIDTHS[0], conv=True), act=nn.ReLU()))
        else:
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(channels, WIDTHS[0], 7, stride=2, padding=3, bias=bias),
                norm=make_norm(norm, WIDTHS[0], conv=True), act=nn.ReLU(),
                pool=nn.MaxPool2d(3, stride=2, padding=1)))
        self.layer1 = stage(WIDTHS[0], WIDTHS[0], 2, 1, norm=norm, shortcut=shortcut)
        self.layer2 = stage(WIDTHS[0], WIDTHS[1], 2, 2, norm=norm, shortcut=shortcut)
        self.layer3 = stage(WIDTHS[1], WIDTHS[2], 2, 2, norm=norm, shortcut=shortcut)
        self.layer4 = stage(WIDTHS[2], WIDTHS[3], 2, 2, norm=norm, shortcut=shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(WIDTHS[3], num_classes)
        init_resnet(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))
