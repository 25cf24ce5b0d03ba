"""Restore a converted model's feedback tensors from a checkpoint of the same converted model.

A converted model's state dict holds its feedback tensors beside the weights (keys under each
converted layer's ``feedback.``), so ``torch.save(model.state_dict())`` and Hugging Face's
``save_pretrained`` write them. ``from_pretrained`` builds the *unconverted* class, which has no
place for them; the pattern is::

    model = AutoModelForCausalLM.from_pretrained(path)    # weights (feedback keys are left out)
    alignlab.convert(model, "fa")                          # the same rule and options as saved
    alignlab.load_feedback(model, path)                    # the saved feedback tensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from .convert import converted_layers
from .nn.kinds import kind_of


def feedback_keys(model: nn.Module) -> list[str]:
    """State-dict keys of ``model``'s feedback tensors."""
    prefixes = tuple(f"{name}.{kind_of(layer).slot}." if name else f"{kind_of(layer).slot}."
                     for name, layer, _ in converted_layers(model))
    return [k for k in model.state_dict() if k.startswith(prefixes)] if prefixes else []


def _read(source: str | Path) -> dict[str, Tensor]:
    """Every tensor of a file or of a save_pretrained folder (safetensors or torch files)."""
    path = Path(source)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"load_feedback: {str(path)!r} holds no *.safetensors or *.bin checkpoint")
    state: dict[str, Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file  # installed with transformers

            state.update(load_file(str(file)))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def load_feedback(model: nn.Module, source: str | Path | Mapping[str, Tensor]) -> nn.Module:
    """Load the feedback tensors of converted ``model`` from ``source`` (a state dict, a file
    written by ``torch.save`` or safetensors, or a ``save_pretrained`` folder); the weights are
    left as they are. Raises a one-line ValueError when a converted layer's feedback is missing."""
    state = source if isinstance(source, Mapping) else _read(source)
    keys = feedback_keys(model)
    missing = [k for k in keys if k not in state]
    if missing:
        layers = sorted({k.rsplit(".", 2)[0] for k in missing})
        where = "the state dict" if isinstance(source, Mapping) else repr(str(source))
        raise ValueError(f"load_feedback: no feedback tensors for {len(layers)} converted layers in {where}: "
                         f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''} (was it saved after convert, "
                         "with the same rule?)")
    model.load_state_dict({k: state[k] for k in keys}, strict=False)
    return model
