"""Optimizers for feedback-trained nets, with explicit parameter groups.

Weight decay goes to matrices and kernels (``p.dim() >= 2``) and never to biases or norm
gains, as in nanoGPT. Learned feedback tensors (Kolen-Pollack's B) are matrices shaped like
their W, so they land in W's group and receive the same decay, which is what makes B → W.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices/kernels with ``weight_decay``, everything else without."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``sgd`` (momentum, L2 decay), ``adam`` (L2 decay) or ``adamw`` (decoupled decay)."""
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
