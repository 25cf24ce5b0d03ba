"""A multilayer perceptron: the network of feedback alignment's first demonstrations.

Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback weights support error
backpropagation for deep learning", Nature Communications 7:13276, trained such fully
connected networks on MNIST. Each hidden layer is Linear → norm → activation; the output
layer is a bare Linear. Initialisation: PyTorch's defaults.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from .checks import make_activation, positive_int, sample_shape
from .norm import check_norm, make_norm


class MLP(nn.Sequential):
    """``flatten → [linear → norm → activation] × depth → linear``.

    Any ``in_shape`` is flattened to ``prod(in_shape)`` inputs. Modules are named
    ``flatten``, ``fc1``, ``norm1``, ``act1``, …, ``head``.
    """

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, *,
                 norm: str = "none",         # hidden-activity norm: none | batch | layer | rms
                 depth: int = 2,             # number of hidden layers (>= 1)
                 width: int = 256,           # units in each hidden layer
                 activation: str = "relu"):  # relu | tanh | gelu
        shape = sample_shape("mlp", in_shape)
        positive_int("mlp", "num_classes", num_classes)
        check_norm(norm)
        positive_int("mlp", "depth", depth)
        positive_int("mlp", "width", width)
        make_activation("mlp", activation)

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        features = math.prod(shape)
        for i in range(1, depth + 1):
            layers[f"fc{i}"] = nn.Linear(features, width)
            layers[f"norm{i}"] = make_norm(norm, width, conv=False)
            layers[f"act{i}"] = make_activation("mlp", activation)
            features = width
        layers["head"] = nn.Linear(features, num_classes)
        super().__init__(layers)
