"""Optimizers for feedback-trained nets, with explicit parameter groups.

Weight decay goes to matrices and kernels (``p.dim() >= 2``) and never to biases or norm
gains, as in nanoGPT. Learned feedback tensors (Kolen-Pollack's B) are matrices shaped like
their W, so they land in W's group and receive the same decay, which is what makes B → W.

``muon`` follows Keller Jordan's recipe, as the rank-collapse paper uses it (Boeshertz,
Pascanu & Clopath 2026, arXiv 2606.11123): ``torch.optim.Muon`` (momentum, then the update
orthogonalised by Newton-Schulz iterations; :class:`Muon` runs that iteration in float32 on
CPUs, where bfloat16 matmuls can be ~100× slower) for the hidden weight matrices and conv kernels,
AdamW for everything else (the first layer, the output layer, embeddings, biases, norm
gains). Muon takes only 2-D tensors, so a conv kernel (out, in, *k) is handed to it as a
2-D view (out, in·k·k) of the same storage: no copy, and the step lands in the kernel.
Feedback parameters go wherever their layer's weight goes, so KP's B gets W's exact update.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULES = ("none", "cosine")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices/kernels with ``weight_decay``, everything else without."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``sgd`` (momentum, L2 decay), ``adam`` (L2 decay), ``adamw`` (decoupled decay) or
    ``muon`` (Muon for hidden matrices + AdamW for the rest, both with decoupled decay)."""
    if name == "muon":
        return MuonWithAdamW(model, lr, weight_decay)
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int):
    """``none``: constant; ``cosine``: lr·½(1 + cos(π t/T)), stepped once per batch."""
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps)))
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    """Modules with a ≥2-D ``weight`` (Linear, ConvNd, Embedding), in definition order."""
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's parameters, AdamW's): hidden Linear/Conv weights — and the feedback parameters
    of those layers — go to Muon; the first and last weight layers, embeddings and every
    other parameter go to AdamW."""
    layers = _weight_layers(model)
    hidden = [m for m in layers[1:-1] if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    muon: list[nn.Parameter] = []
    for layer in hidden:
        muon.append(layer.weight)
        feedback = getattr(layer, "feedback", None)
        if feedback is not None:
            muon += [p for p in feedback.parameters() if p.dim() >= 2]
    taken = {id(p) for p in muon}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return [p for p in muon if p.requires_grad], rest


def orthogonalize(G: torch.Tensor, steps: int, coefficients: tuple[float, float, float], eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Muon's quintic Newton-Schulz map G ↦ ≈ UVᵀ (Jordan et al. 2024), computed in ``dtype``:

        X₀ = G/‖G‖_F (wide side first),  Xₜ₊₁ = a Xₜ + (b A + c A²) Xₜ,  A = Xₜ Xₜᵀ

    the same iteration as ``torch.optim.Muon``, which always computes it in bfloat16.
    """
    a, b, c = coefficients
    X = G.to(dtype)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X.T if tall else X


def _lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning-rate factor (its ``adjust_lr_fn``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` whose Newton-Schulz iteration runs in float32 on CPUs.

    torch's Muon orthogonalises in bfloat16; a CPU without bfloat16 matrix units multiplies
    bfloat16 about 100× slower than float32 (25 ms vs 0.26 ms for 256 × 256 here), which made
    a Muon step over the 6 × 256 MLP's hidden matrices 1.4 s instead of 26 ms
    (``benchmarks/overheads.py``). Every other part of the step (Nesterov
    momentum, the update lr·ratio·NS(B̃), decoupled decay) and the state are torch's.
    ``ns_dtype=None`` picks bfloat16 on CUDA and float32 elsewhere.
    """

    def __init__(self, params, *args, ns_dtype: torch.dtype | None = None, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            lr, decay, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p, g, buf in zip(params, grads, bufs):
                buf.lerp_(g, 1 - mu)
                update = g.lerp(buf, mu) if group["nesterov"] else buf
                dtype = self.ns_dtype or (torch.bfloat16 if p.is_cuda else torch.float32)
                update = orthogonalize(update, group["ns_steps"], group["ns_coefficients"], group["eps"], dtype)
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-lr * _lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer object over two: ``torch.optim.Muon`` and ``torch.optim.AdamW``.

    Muon's learning rate is scaled with ``adjust_lr_fn="match_rms_adamw"`` (its update gets
    AdamW's typical RMS), so one ``lr`` serves both. ``param_groups`` are the two inner
    optimizers' own groups, so learning-rate schedules reach both.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0) -> None:
        muon_params, rest = muon_split(model)
        self.views = [(p, p.detach().view(p.shape[0], -1)) for p in muon_params]  # shared storage
        self.muon = Muon([v for _, v in self.views] or [torch.zeros(1, 1)], lr=lr,
                                     weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        decay = [p for p in rest if p.dim() >= 2]
        other = [p for p in rest if p.dim() < 2]
        self.adamw = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                        {"params": other, "weight_decay": 0.0}], lr=lr)
        self.defaults = {"lr": lr}
        self.param_groups = self.muon.param_groups + self.adamw.param_groups
        self.state = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}

    @torch.no_grad()
    def step(self, closure=None):
        for p, v in self.views:
            v.grad = None if p.grad is None else p.grad.view_as(v)
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)
        for p, _ in self.views:
            p.grad = None

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
