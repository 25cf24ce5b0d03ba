"""Reference models for feedback-alignment experiments, built by name.

>>> from alignlab import models
>>> net = models.build("resnet20", in_shape=(3, 32, 32), num_classes=10, norm="batch")

Models (each module's docstring cites its source and gives its layout) and their options:

- ``mlp``: Linear → norm → activation per hidden layer (Lillicrap et al. 2016);
  ``depth``, ``width``, ``activation``.
- ``lenet``: LeNet-5 (LeCun et al. 1998) as BioTorch uses it; ``activation``.
- ``plaincnn``: ``depth`` 3×3 convs, no skips, global average pool (the depth axis of the
  rank-collapse experiment); ``depth``, ``width``, ``activation``.
- ``arch1``: the "Arch 1" CNN (Moskovitz et al. 2018) for 24×24 CIFAR crops;
  ``activation``, ``lrn``.
- ``resnet20``, ``resnet32``, ``resnet56``: the CIFAR ResNets (He et al. 2016 §4.2);
  ``shortcut``.
- ``resnet18``: ResNet-18 (He et al. 2016) with a small-image stem up to 64×64;
  ``shortcut``, ``stem``.
- ``vit``: a small Vision Transformer (Dosovitskiy et al. 2021); ``patch``, ``dim``,
  ``depth``, ``heads``, ``mlp_ratio``.

``norm`` (one of :data:`NORMS`) is the hidden-activity normalisation of every hidden layer,
never of the output; see :mod:`alignlab.models.norm`. Its default is ``"none"`` for every
model but ``vit``, whose default is ``"layer"``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .arch1 import Arch1
from .checks import positive_int
from .lenet import LeNet5
from .mlp import MLP
from .plaincnn import PlainCNN
from .norm import NORMS, ChannelRMSNorm, FeatureBatchNorm, check_norm, make_norm
from .resnet18 import ResNet18
from .resnet_cifar import CifarResNet
from .vit import ViT

# name -> (class, arguments fixed by the name)
_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "mlp": (MLP, {}),
    "lenet": (LeNet5, {}),
    "plaincnn": (PlainCNN, {}),
    "arch1": (Arch1, {}),
    "resnet20": (CifarResNet, {"blocks_per_stage": 3}),
    "resnet32": (CifarResNet, {"blocks_per_stage": 5}),
    "resnet56": (CifarResNet, {"blocks_per_stage": 9}),
    "resnet18": (ResNet18, {}),
    "vit": (ViT, {}),
}


def names() -> list[str]:
    """The model names :func:`build` knows."""
    return list(_MODELS)


def _lookup(name: object) -> tuple[type[nn.Module], dict[str, Any]]:
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(_MODELS)}")
    return _MODELS[name]


def _keyword_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY}


def options(name: str) -> dict[str, Any]:
    """``name``'s options and their defaults (``norm`` excluded)."""
    cls, fixed = _lookup(name)
    return {k: v for k, v in _keyword_defaults(cls).items() if k != "norm" and k not in fixed}


def default_norm(name: str) -> str:
    """The norm ``name`` gets when :func:`build` is given none."""
    return _keyword_defaults(_lookup(name)[0])["norm"]


def build(name: str, *, in_shape: tuple[int, ...], num_classes: int, norm: str | None = None,
          **options_: Any) -> nn.Module:
    """The model ``name`` for samples of shape ``in_shape`` and ``num_classes`` outputs.

    Args:
        name: one of :func:`names`.
        in_shape: one sample's shape: (C, H, W) for images, (d,) for vectors. ``mlp`` takes
            any shape and flattens it; the other models take images only.
        num_classes: the output width; the model returns ``(batch, num_classes)`` logits.
        norm: hidden-activity normalisation, one of :data:`NORMS`; ``None`` (the default)
            is the model's own default: ``"none"``, except ``"layer"`` for ``vit``.
        **options_: the model's options (see :func:`options`).

    Raises:
        ValueError: an unknown name, option or norm (naming the valid ones), or a bad value.
    """
    cls, fixed = _lookup(name)
    valid = options(name)
    unknown = sorted(set(options_) - set(valid))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))} for model {name!r}; "
                         f"valid options: {', '.join(valid) or '(none)'}")
    if norm is not None:
        check_norm(norm)
    positive_int(name, "num_classes", num_classes)
    kwargs = {**fixed, **options_, **({} if norm is None else {"norm": norm})}
    return cls(in_shape, num_classes, **kwargs)


__all__ = [
    "NORMS", "names", "build", "options", "default_norm", "make_norm",
    "MLP", "LeNet5", "Arch1", "CifarResNet", "ResNet18", "ViT", "ChannelRMSNorm", "FeatureBatchNorm",
]
