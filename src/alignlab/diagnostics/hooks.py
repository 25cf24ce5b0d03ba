"""Thin hooks: read what converted layers output during a forward pass."""

from __future__ import annotations

from contextlib import contextmanager

from torch import Tensor, nn

from ..convert import converted_layers


@contextmanager
def layer_outputs(model: nn.Module):
    """Within the block, ``outputs[name]`` is the last output of each converted layer
    (attention modules: their first output)."""
    outputs: dict[str, Tensor] = {}

    def keep(name):
        def hook(module, args, out):
            outputs[name] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = [layer.register_forward_hook(keep(name)) for name, layer, _ in converted_layers(model)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
