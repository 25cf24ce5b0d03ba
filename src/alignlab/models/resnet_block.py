"""The basic residual block of He, Zhang, Ren & Sun (2016), "Deep residual learning for image
recognition", CVPR, arXiv 1512.03385, shared by the CIFAR ResNets and ResNet-18.

    x → conv 3×3 → norm → ReLU → conv 3×3 → norm → (+ shortcut(x)) → ReLU

Shortcuts when the block changes the shape (§3.3): option A is the identity with stride-2
subsampling and zero channels appended ("extra zero entries padded for increasing
dimensions", parameter-free; He et al. use it for their CIFAR ResNets, §4.2, and so does
BioTorch's resnet20); option B is a 1×1 convolution with the block's stride, then a norm
(the usual choice for ResNet-18/34 on ImageNet). Blocks that keep the shape use the identity.

Convolutions carry a bias only where the following norm has no shift of its own (``none``,
``rms``): He et al. have none because BN follows every conv. Initialisation (He et al. §3.4
cite the initialisation of He et al. 2015): :func:`init_resnet`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .norm import conv_bias, make_norm

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: ``x[:, :, ::stride, ::stride]`` with ``out_channels - in_channels`` zero
    channels appended. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and a shortcut. Modules: ``conv1``, ``norm1``, ``act1``,
    ``conv2``, ``norm2``, ``shortcut``, ``act2``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, norm: str, shortcut: str):
        super().__init__()
        bias = conv_bias(norm)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, out_channels, conv=True)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels, conv=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            if out_channels < in_channels:
                raise ValueError("shortcut 'A' cannot reduce channels")
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                make_norm(norm, out_channels, conv=True))
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def stage(in_channels: int, out_channels: int, blocks: int, stride: int, *, norm: str,
          shortcut: str) -> nn.Sequential:
    """``blocks`` basic blocks; the first has ``stride`` and changes the channel count."""
    return nn.Sequential(*(
        BasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
                   norm=norm, shortcut=shortcut)
        for i in range(blocks)))


def init_resnet(model: nn.Module) -> None:
    """He et al. (2015) initialisation, as He et al. (2016) use: every convolution's weight
    ~ N(0, 2 / (k·k·out_channels)) (Kaiming normal, fan_out, ReLU gain), its bias 0. Norm
    layers keep gain 1 and shift 0 and the final Linear keeps PyTorch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
