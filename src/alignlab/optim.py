"""Optimizers for feedback-trained nets, with explicit parameter groups.

Weight decay goes to matrices and kernels (``p.dim() >= 2``) and never to biases or norm
gains, as in nanoGPT. Learned feedback tensors (Kolen-Pollack's B) are matrices shaped like
their W, so they land in W's group and receive the same decay, which is what makes B → W.

``muon`` follows Keller Jordan's recipe, as the rank-collapse paper uses it (Boeshertz,
Pascanu & Clopath 2026, arXiv 2606.11123): Muon for the hidden weight matrices and conv
kernels, AdamW for everything else (the first layer, the output layer, embeddings, biases,
norm gains), both in one :class:`MuonWithAdamW` whose parameter groups say which rule they
follow (``use_muon``). Feedback parameters go wherever their layer's weight goes, so KP's B
gets W's exact update.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/), for a parameter W with
gradient G, both seen as matrices (a kernel (out, in, *k) as its (out, in·∏k) view, no copy):

    B ← μB + (1 − μ)G                         momentum (``momentum`` μ = 0.95)
    M = (1 − μ)G + μB  (or B)                 Nesterov (``nesterov=True``) or plain
    O = NS(M)                                 ≈ UVᵀ of M = USVᵀ, by Newton-Schulz:
        X₀ = M / max(‖M‖_F, ε), transposed to be wide (``ns_eps`` ε = 1e-7)
        Xₜ₊₁ = a Xₜ + (b A + c A²) Xₜ,  A = Xₜ Xₜᵀ,  t < ``ns_steps`` (5)
        (a, b, c) = (3.4445, −4.7750, 2.0315)  (``ns_coefficients``, quintic, maximal slope at 0)
    W ← (1 − ηλ) W − η s O                    decoupled decay λ, shape scaling s (``adjust_lr_fn``):
        None / "original":  s = √max(1, rows/cols)
        "match_rms_adamw":  s = 0.2 √max(rows, cols)   (AdamW's update RMS: one η serves both)

The iteration runs in ``ns_dtype``: ``None`` picks bfloat16 on CUDA (as ``torch.optim.Muon``
always does) and float32 elsewhere, since CPUs without bfloat16 matrix units multiply
bfloat16 far more slowly than float32. With ``ns_dtype=torch.bfloat16`` a step equals
``torch.optim.Muon``'s bit for bit.

AdamW (Loshchilov & Hutter 2019), in ``torch.optim.AdamW``'s order of operations:
m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², W ← (1 − ηλ)W − η m̂ / (√v̂ + ε) with m̂, v̂ the
bias-corrected moments (``betas`` = (0.9, 0.999), ``eps`` = 1e-8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .nn.kinds import kind_of

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULES = ("none", "cosine")
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
# layers whose weight Muon takes when they are hidden (ConvTranspose: (in, out, *k) — still a matrix per row)
MUON_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


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
        return MuonWithAdamW(muon_param_groups(model, weight_decay), lr=lr, adjust_lr_fn="match_rms_adamw")
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


def decay_multiplier(schedule: list[float], epoch: int) -> float:
    """The weight-decay multiplier of (1-based) ``epoch``: ``schedule[epoch - 1]``, the last
    entry once the list ends, 1 for an empty list."""
    return float(schedule[min(epoch, len(schedule)) - 1]) if schedule else 1.0


def set_decay(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Every parameter group's weight decay := its initial decay × ``multiplier`` (the initial
    value is kept in the group as ``initial_weight_decay``, so it is saved with the optimizer)."""
    for group in optimizer.param_groups:
        base = group.setdefault("initial_weight_decay", group["weight_decay"])
        group["weight_decay"] = base * multiplier


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Modules with a ≥2-D ``weight`` (Linear, ConvNd, Embedding), in definition order."""
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's parameters, AdamW's): hidden Linear/Conv weights — and the feedback parameters
    of those layers — go to Muon; the first and last weight layers, embeddings and every
    other parameter go to AdamW."""
    hidden = [m for m in weight_layers(model)[1:-1] if isinstance(m, MUON_LAYERS)]
    muon: list[nn.Parameter] = []
    for layer in hidden:
        muon.append(layer.weight)
        kind = kind_of(layer)  # a converted layer: its feedback's matrices follow it
        if kind is not None:
            muon += [p for p in getattr(layer, kind.slot).parameters() if p.dim() >= 2]
    taken = {id(p) for p in muon}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return [p for p in muon if p.requires_grad], rest


def muon_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Three groups for :class:`MuonWithAdamW`: Muon's (decayed), AdamW's matrices (decayed)
    and AdamW's vectors (not decayed). Always three, some maybe empty."""
    muon, rest = muon_split(model)
    return [{"params": muon, "use_muon": True, "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() >= 2], "use_muon": False, "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "use_muon": False, "weight_decay": 0.0}]


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, everything else): a view of the same storage when ``t`` is contiguous."""
    return t.reshape(t.size(0), -1)


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


def lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning-rate factor s for a (rows, cols, ...) matrix."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def momentum_direction(grad: torch.Tensor, buf: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
    """Muon's momentum: B ← μB + (1 − μ)G in place; returns (1 − μ)G + μB (Nesterov) or B."""
    buf.lerp_(grad, 1 - momentum)
    return grad.lerp(buf, momentum) if nesterov else buf


def muon_update_(p: torch.Tensor, state: dict, group: dict) -> None:
    """One Muon step on ``p`` (≥ 2-D, seen as a matrix), its momentum kept in ``state``."""
    grad = as_matrix(p.grad)
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(grad)
    direction = momentum_direction(grad, state["momentum_buffer"], group["momentum"], group["nesterov"])
    dtype = group["ns_dtype"] or (torch.bfloat16 if p.device.type == "cuda" else torch.float32)
    update = orthogonalize(direction, group["ns_steps"], group["ns_coefficients"], group["ns_eps"], dtype)
    lr = group["lr"]
    p.mul_(1 - lr * group["weight_decay"])
    p.add_(update.reshape(p.shape), alpha=-lr * lr_ratio(group["adjust_lr_fn"], grad.shape))


def adamw_update_(p: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: int, lr: float, weight_decay: float, betas: tuple[float, float], eps: float) -> None:
    """One AdamW step on ``p`` (moments updated in place), in ``torch.optim.AdamW``'s order of
    operations, so equal to its single-tensor step bit for bit."""
    beta1, beta2 = betas
    p.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
    p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** step))


def adamw_state_update_(p: torch.Tensor, state: dict, group: dict) -> None:
    """One AdamW step on ``p``, its moments and step count kept in ``state``."""
    if "step" not in state:
        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    state["step"] += 1
    adamw_update_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["lr"],
                  group["weight_decay"], group["betas"], group["eps"])


def check_group(group: dict) -> None:
    """A one-line error for a group that names no rule, or gives Muon a vector."""
    if not isinstance(group["use_muon"], bool):
        raise ValueError("every parameter group needs use_muon=True (Muon) or use_muon=False (AdamW)")
    if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
        raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {group['adjust_lr_fn']!r}")
    if group["use_muon"] and any(p.dim() < 2 for p in group["params"]):
        raise ValueError("Muon takes matrices and kernels (≥ 2-D); put vectors in a use_muon=False group")


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups with ``use_muon=True``, AdamW for those with ``use_muon=False``.

    One ``torch.optim.Optimizer``: ``state_dict``/``load_state_dict``, ``add_param_group``,
    ``zero_grad``, step hooks and learning-rate schedulers work as for any torch optimizer,
    and ``step(closure)`` evaluates the closure with gradients enabled and returns its loss.
    Every keyword is a default that a group may override; ``use_muon`` has none unless given
    here, so each group must then say. Muon's options: ``momentum``, ``nesterov``, ``ns_steps``,
    ``ns_coefficients``, ``ns_eps``, ``ns_dtype``, ``adjust_lr_fn``; AdamW's: ``betas``,
    ``eps``; both: ``lr``, ``weight_decay`` (decoupled). The module docstring gives the rules.
    Per-parameter state: ``momentum_buffer`` (the (rows, cols) matrix) for Muon, ``step``,
    ``exp_avg`` and ``exp_avg_sq`` for AdamW. Parameters without a gradient are skipped.
    """

    def __init__(self, params: Params, lr: float = 1e-3, weight_decay: float = 0.0, *,
                 use_muon: bool | None = None, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 ns_eps: float = 1e-7, ns_dtype: torch.dtype | None = None, adjust_lr_fn: str | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, use_muon=use_muon, momentum=momentum,
                        nesterov=nesterov, ns_steps=ns_steps, ns_coefficients=ns_coefficients,
                        ns_eps=ns_eps, ns_dtype=ns_dtype, adjust_lr_fn=adjust_lr_fn, betas=betas, eps=eps)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = muon_update_ if group["use_muon"] else adamw_state_update_
            for p in group["params"]:
                if p.grad is not None:
                    update(p, self.state[p], group)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also takes the layout saved before alignlab's Muon was one optimizer ({"muon", "adamw"})."""
        if set(state_dict) == {"muon", "adamw"}:
            state_dict = from_two_optimizer_layout(state_dict, self.state_dict()["param_groups"])
        super().load_state_dict(state_dict)


class Muon(MuonWithAdamW):
    """Every group on Muon unless it says ``use_muon=False``; ``torch.optim.Muon``'s defaults
    (``lr=1e-3``, ``weight_decay=0.1``), its Newton-Schulz run in ``ns_dtype`` (float32 off CUDA)."""

    def __init__(self, params: Params, lr: float = 1e-3, weight_decay: float = 0.1, **options: Any) -> None:
        super().__init__(params, lr, weight_decay, use_muon=True, **options)


CARRIED_KEYS = ("lr", "initial_lr", "weight_decay")  # what a run or its schedule changes


def from_two_optimizer_layout(old: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The old {"muon": torch Muon's state_dict, "adamw": torch AdamW's} (one Muon group, then
    AdamW's) as a state_dict for ``groups`` (this optimizer's packed groups, in the same order):
    state moved group by group and position by position, lr and decay carried over; the
    placeholder Muon parameter of a net without hidden layers finds no partner and is dropped."""
    old_groups = old["muon"]["param_groups"] + old["adamw"]["param_groups"]
    if len(old_groups) != len(groups):
        raise ValueError(f"optimizer state has {len(old_groups)} groups in the old Muon + AdamW layout; "
                         f"this optimizer has {len(groups)}")
    old_state = [old["muon"]["state"]] + [old["adamw"]["state"]] * len(old["adamw"]["param_groups"])
    state, packed = {}, []
    for was, now, saved in zip(old_groups, groups, old_state):
        for i, j in zip(was["params"], now["params"]):
            if i in saved:
                state[j] = {k: int(v) if k == "step" else v for k, v in saved[i].items()}
        packed.append({**now, **{k: was[k] for k in CARRIED_KEYS if k in was}})
    return {"state": state, "param_groups": packed}
