"""The "Arch 1" network: the small CIFAR-10 network of Moskovitz, Litwin-Kumar & Abbott (2018),
"Feedback alignment in deep convolutional networks", arXiv 1812.06488, as used by Lance &
Kieu (2026) on 24×24 CIFAR-10 crops.

    conv 64@5×5 → ReLU → max-pool 3×3/2 → conv 64@5×5 → ReLU → max-pool 3×3/2
    → FC 384 → ReLU → FC 192 → ReLU → FC classes

Source and how sure this is: the paper's architecture table could not be read here (only its
abstract was reachable). The layers above are the network of the TensorFlow CIFAR-10
tutorial (after Krizhevsky's cuda-convnet), which is what "Arch 1" is recalled to be and
which matches the 24×24 crops (the tutorial's own input): convolutions "same"-padded with
stride 1, pools 3×3 with stride 2 and "same" padding, so 24 → 12 → 6 and FC 384 reads
64·6·6 = 2304 features (64·8·8 = 4096 for 32×32 inputs). The tutorial also had local
response normalisation after each conv stage (``lrn=True`` adds it, with the tutorial's
constants); it is off by default because the recalled description has none and the
``norm`` knob is this library's normalisation. Each hidden layer is layer → norm →
activation (→ pool); the output layer is a bare Linear. Initialisation: PyTorch's defaults
(the tutorial drew truncated normals of fixed std, which nothing here depends on).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .checks import image_shape, make_activation, one_of, positive_int
from .norm import check_norm, make_norm


def _pool_out(size: int) -> int:
    """Size after MaxPool2d(3, stride=2, padding=1): ceil(size / 2), TensorFlow's 'SAME'."""
    return (size + 2 - 3) // 2 + 1


def _lrn() -> nn.Module:
    # TF tutorial: depth_radius 4, bias 1, alpha 0.001/9, beta 0.75. PyTorch divides alpha by
    # the window size (2·4 + 1 = 9) where TensorFlow does not, so alpha here is 0.001.
    return nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0)


class Arch1(nn.Sequential):
    """Two 5×5 conv stages and three FC layers. Modules: ``conv1``, ``norm1``, ``act1``,
    ``pool1``, ``conv2``, …, ``flatten``, ``fc1`` (384), ``fc2`` (192), ``head``."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *,
                 norm: str = "none",          # hidden-activity norm: none | batch | layer | rms
                 activation: str = "relu",    # relu | tanh | gelu
                 lrn: bool = False):          # the TF tutorial's local response normalisation
        channels, height, width = image_shape("arch1", in_shape)
        positive_int("arch1", "num_classes", num_classes)
        check_norm(norm)
        make_activation("arch1", activation)
        one_of("arch1", "lrn", lrn, (False, True))

        h, w = _pool_out(_pool_out(height)), _pool_out(_pool_out(width))

        def act() -> nn.Module:
            return make_activation("arch1", activation)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"] = nn.Conv2d(channels, 64, 5, padding=2)
        layers["norm1"] = make_norm(norm, 64, conv=True)
        layers["act1"] = act()
        layers["pool1"] = nn.MaxPool2d(3, stride=2, padding=1)
        if lrn:
            layers["lrn1"] = _lrn()  # the tutorial normalises after pool1 ...
        layers["conv2"] = nn.Conv2d(64, 64, 5, padding=2)
        layers["norm2"] = make_norm(norm, 64, conv=True)
        layers["act2"] = act()
        if lrn:
            layers["lrn2"] = _lrn()  # ... and before pool2
        layers["pool2"] = nn.MaxPool2d(3, stride=2, padding=1)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(64 * h * w, 384)
        layers["norm3"] = make_norm(norm, 384, conv=False)
        layers["act3"] = act()
        layers["fc2"] = nn.Linear(384, 192)
        layers["norm4"] = make_norm(norm, 192, conv=False)
        layers["act4"] = act()
        layers["head"] = nn.Linear(192, num_classes)
        super().__init__(layers)
