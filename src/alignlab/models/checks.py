"""Argument checks shared by the reference models: each failure is a one-line ValueError."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

ACTIVATIONS = ("relu", "tanh", "gelu")


def positive_int(model: str, name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{model}: {name} must be a positive integer, got {value!r}")
    return value


def positive_number(model: str, name: str, value: object) -> float:
    """``value`` if it is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{model}: {name} must be a positive number, got {value!r}")
    return value


def one_of(model: str, name: str, value: object, choices: Sequence[object]) -> object:
    """``value`` if it is one of ``choices``."""
    if not any(type(value) is type(c) and value == c for c in choices):  # 1 is not True here
        raise ValueError(f"{model}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def make_activation(model: str, name: object) -> nn.Module:
    """A fresh activation module: ``relu``, ``tanh`` or ``gelu``."""
    one_of(model, "activation", name, ACTIVATIONS)
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[name]()


def sample_shape(model: str, in_shape: object) -> tuple[int, ...]:
    """``in_shape`` as a tuple of positive ints (one sample's shape, no batch dimension)."""
    try:
        shape = tuple(in_shape)  # type: ignore[arg-type]
    except TypeError:
        shape = ()
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"{model}: in_shape must be a non-empty tuple of positive ints, got {in_shape!r}")
    return shape


def image_shape(model: str, in_shape: object) -> tuple[int, int, int]:
    """``in_shape`` as (C, H, W); image models take no flat vectors."""
    shape = sample_shape(model, in_shape)
    if len(shape) != 3:
        raise ValueError(f"{model}: in_shape must be an image's (C, H, W), got {in_shape!r}")
    return shape  # type: ignore[return-value]
