"""alignlab: train deep networks without weight transport.

>>> import torch, alignlab
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> net = alignlab.convert(net, rule="fa")   # train it with any ordinary loop
"""

from importlib.metadata import PackageNotFoundError, version

from . import nn, rules
from .convert import convert, converted_layers, revert, summary
from .nn.kinds import register_layer
from .saving import load_feedback

try:
    __version__ = version("alignlab")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["convert", "converted_layers", "load_feedback", "nn", "register_layer", "revert", "rules", "summary", "__version__"]
