"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11)), in the modern form BioTorch benchmarks on MNIST and
Fashion-MNIST (Sanfiz & Akrout 2021, arXiv 2108.13446).

    conv 6@5×5 → pool 2×2 → conv 16@5×5 → pool 2×2 → FC 120 → FC 84 → FC classes

As in BioTorch: ReLU (option ``activation``) and max pooling where the 1998 paper had scaled
tanh and trainable subsampling, and no partial C3 connection table. LeCun et al. padded the
28×28 MNIST digits into a 32×32 field; here the first convolution pads by 2 when the input is
smaller than 32×32, so 28×28 and 32×32 inputs both reach FC 120 as 16×5×5 = 400 features.
The flatten size is computed from ``in_shape``, so any size whose maps stay >= 1 pixel works.
C5 is a fully connected layer (the 1998 C5 is a 5×5 convolution over a 5×5 map: the same
thing for 32×32 inputs). Each hidden layer is layer → norm → activation (→ pool); the output
layer is a bare Linear. Initialisation: PyTorch's defaults.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .checks import image_shape, make_activation, positive_int
from .norm import check_norm, make_norm


def _conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LeNet5(nn.Sequential):
    """LeNet-5 for (C, H, W) images. Modules: ``conv1``, ``norm1``, ``act1``, ``pool1``,
    ``conv2``, …, ``flatten``, ``fc1`` (120), ``fc2`` (84), ``head`` (classes)."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *,
                 norm: str = "none",         # hidden-activity norm: none | batch | layer | rms
                 activation: str = "relu"):  # relu | tanh | gelu
        channels, height, width = image_shape("lenet", in_shape)
        positive_int("lenet", "num_classes", num_classes)
        check_norm(norm)
        make_activation("lenet", activation)

        padding = 2 if min(height, width) < 32 else 0
        h, w = height, width
        for kernel, pad in ((5, padding), (5, 0)):  # conv (5×5) then 2×2 pool, twice
            h, w = _conv_out(h, kernel, pad) // 2, _conv_out(w, kernel, pad) // 2
        if h < 1 or w < 1:
            raise ValueError(f"lenet: in_shape {tuple(in_shape)!r} is too small (its maps vanish before FC 120)")

        def act() -> nn.Module:
            return make_activation("lenet", activation)

        super().__init__(OrderedDict(
            conv1=nn.Conv2d(channels, 6, 5, padding=padding),
            norm1=make_norm(norm, 6, conv=True), act1=act(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, 5),
            norm2=make_norm(norm, 16, conv=True), act2=act(), pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * h * w, 120), norm3=make_norm(norm, 120, conv=False), act3=act(),
            fc2=nn.Linear(120, 84), norm4=make_norm(norm, 84, conv=False), act4=act(),
            head=nn.Linear(84, num_classes),
        ))
