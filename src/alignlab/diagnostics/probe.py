"""All diagnostics of one model on one probe batch, as a flat dict of numbers.

Keys, per converted layer L: ``angle/L`` (∠ ΔW_rule, ΔW_BP), ``delta_angle/L`` (∠ δ_rule, δ_BP per
sample), ``walign/L`` and ``wnorm/L`` (∠(B, W) and ‖B‖/‖W‖), and ``{erank,srank,pr}/{delta,act,dw}/L``:
effective rank, stable rank and participation ratio of the error signals, the hidden
activities (layer outputs) and the weight updates. Conv maps count each position as a sample;
a conv weight update is read as an (out × in·k·k) matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..convert import converted_layers
from ..nn.kinds import kind_of
from .alignment import measure_alignment, weight_alignment
from .rank import all_ranks


def _ranks(kind: str, name: str, x: Tensor, conv: bool) -> dict[str, float]:
    return {f"{r}/{kind}/{name}": v for r, v in all_ranks(x, conv).items()}


def measure(model: nn.Module, loss_fn, inputs, targets, angles: bool = True, ranks: bool = True) -> dict[str, float]:
    """Angles and ranks of every converted layer on (inputs, targets); the model is untouched."""
    out: dict[str, float] = {}
    result = measure_alignment(model, loss_fn, inputs, targets)
    conv = {n: kind_of(l).channels_first for n, l, _ in converted_layers(model)}
    if angles:
        out.update({f"angle/{n}": a for n, a in result.weights.items()})
        out.update({f"delta_angle/{n}": a for n, a in result.errors.items()})
        for n, w in weight_alignment(model).items():
            out[f"walign/{n}"], out[f"wnorm/{n}"] = w["angle"], w["norm_ratio"]
    if ranks:
        p = result.rule_pass
        with torch.no_grad():
            for n, e in p.errors.items():
                out.update(_ranks("delta", n, e, conv[n]))
                out.update(_ranks("act", n, p.activities[n], conv[n]))
            for n, g in p.weight_grads.items():
                out.update(_ranks("dw", n, g.reshape(g.shape[0], -1), False))
    return out
