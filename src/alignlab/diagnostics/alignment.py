"""How close a rule's updates and error signals are to backprop's, and its B to W.

Gradient alignment (Lillicrap et al. 2016, Fig. 2): on one batch, the angle between the
weight update the rule computes, ΔW_rule = δ_rule xᵀ, and the true gradient ΔW_BP; and
between the error signals δ_l = ∂L/∂(layer output) themselves, per sample, then averaged.
The true quantities come from a *shadow pass* under :func:`alignlab.nn.exact`. Both passes
use ``torch.autograd.grad``: no ``.grad`` and no optimizer state is touched; norm-layer
running statistics and torch's RNG are put back as they were (both passes see the same
dropout masks), so a run measured this way trains exactly as one that is not.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..convert import converted_layers
from ..nn import exact
from ..nn.kinds import layer_weight
from ..rules import Feedback


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors seen as vectors (90 when either is zero)."""
    a, b = a.flatten().double(), b.flatten().double()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 90.0
    return math.degrees(math.acos(float((a @ b / denom).clamp(-1, 1))))


def per_sample_angle(a: Tensor, b: Tensor) -> float:
    """Mean over samples (dim 0) of the angle between a[i] and b[i], in degrees."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    keep = torch.isfinite(cos)  # samples whose error is exactly zero have no direction
    return float(torch.rad2deg(torch.arccos(cos[keep].clamp(-1, 1))).mean()) if keep.any() else 90.0


@contextmanager
def preserved(model: nn.Module):
    """Restore torch's RNG and every non-feedback buffer (BatchNorm statistics) on exit."""
    feedback_buffers = {id(b) for m in model.modules() if isinstance(m, Feedback) for b in m.buffers()}
    saved = {n: b.clone() for n, b in model.named_buffers() if id(b) not in feedback_buffers}
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in saved.items():
                buffers[name].copy_(value)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@dataclass
class Pass:
    """What one forward/backward measured, per converted layer."""

    weight_grads: dict[str, Tensor] = field(default_factory=dict)
    errors: dict[str, Tensor] = field(default_factory=dict)  # δ at the layer output
    activities: dict[str, Tensor] = field(default_factory=dict)  # the layer output


def measure_pass(model: nn.Module, loss_fn, inputs, targets, exact_mode: bool) -> Pass:
    """One forward + ``autograd.grad`` pass, with the rule's backward or exact BP."""
    layers = [(n, l) for n, l, _ in converted_layers(model)]
    outputs: dict[str, Tensor] = {}

    def keep(name):
        def hook(module, args, out):
            if isinstance(out, Tensor) and out.requires_grad:
                outputs[name] = out
        return hook

    handles = [layer.register_forward_hook(keep(name)) for name, layer in layers]
    try:
        with torch.enable_grad(), (exact() if exact_mode else _nothing()):
            loss = loss_fn(model(inputs), targets)
            weights = [layer_weight(l) for _, l in layers]
            names_out = list(outputs)
            grads = torch.autograd.grad(loss, weights + [outputs[n] for n in names_out], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    result = Pass()
    for (name, _), g in zip(layers, grads[: len(layers)]):
        if g is not None:
            result.weight_grads[name] = g.detach()
    for name, g in zip(names_out, grads[len(layers):]):
        if g is not None:
            result.errors[name] = g.detach()
            result.activities[name] = outputs[name].detach()
    return result


@contextmanager
def _nothing():
    yield


@dataclass
class Alignment:
    """Angles in degrees, per converted layer."""

    weights: dict[str, float]  # ΔW_rule vs ΔW_BP
    errors: dict[str, float]  # δ_rule vs δ_BP, per sample, averaged
    rule_pass: Pass  # the rule's own pass (for rank diagnostics)


def measure_alignment(model: nn.Module, loss_fn, inputs, targets) -> Alignment:
    """Rule pass and shadow exact pass on the same batch, with the model left as it was."""
    with preserved(model):
        rng = torch.get_rng_state()
        rule = measure_pass(model, loss_fn, inputs, targets, exact_mode=False)
        torch.set_rng_state(rng)  # same dropout masks in both passes
        true = measure_pass(model, loss_fn, inputs, targets, exact_mode=True)
    weights = {n: angle(g, true.weight_grads[n]) for n, g in rule.weight_grads.items() if n in true.weight_grads}
    errors = {n: per_sample_angle(e, true.errors[n]) for n, e in rule.errors.items() if n in true.errors}
    return Alignment(weights, errors, rule)


def gradient_alignment(model: nn.Module, loss_fn, inputs, targets) -> dict[str, float]:
    """{layer: angle in degrees between the rule's weight update and the true gradient}."""
    return measure_alignment(model, loss_fn, inputs, targets).weights


def weight_alignment(model: nn.Module) -> dict[str, dict[str, float]]:
    """{layer: {"angle": ∠(B, W) in degrees, "norm_ratio": ‖B‖/‖W‖}} for every layer whose
    feedback is a matrix shaped like W (bp: B = W; dfa's B maps the output error and untied conv
    feedback has a kernel per position, so their layers are left out)."""
    out = {}
    for name, layer, feedback in converted_layers(model):
        if feedback.direct or feedback.own_input_grad:  # no single matrix in W's place
            continue
        w = layer_weight(layer).detach()
        with torch.no_grad():
            b = feedback.matrix(w)
        b = w if b is None else b.detach()
        out[name] = {"angle": angle(b, w), "norm_ratio": float(b.norm() / w.norm())}
    return out
