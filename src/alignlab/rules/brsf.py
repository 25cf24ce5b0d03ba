"""Batchwise random-magnitude sign-concordant feedback, brSF (Moskovitz, Litwin-Kumar &
Abbott 2018, arXiv 1812.06488; Liao et al. 2016):

    B_l = |R_l| ⊙ sign(W_l),   R_l redrawn every time W_l changes (each mini-batch)

|R| is uniform on (0, a), with a as for FA's B (``init``), drawn at 8-bit resolution: each
entry is (k + ½)·a/256 with k uniform on {0, …, 255}, so one 64-bit random word gives eight
magnitudes (the mean is a/2 exactly and the variance differs from the continuous U(0, a)'s by
1/65536 of it). Each draw comes from a generator seeded by the layer's ``seed`` and a draw
counter ``step``, so processes that share a seed draw the same R without talking to each other.
The current |R| and a fingerprint of the W it was drawn for (the sum of W's bit patterns read
as integers: exact, so independent of summation order and thread count) are buffers too: a new
R is drawn exactly when W's bits change, however many forward passes (diagnostics, evaluation)
run in between, and a run resumed from a checkpoint replays the same draws.

Options
-------
init : a, the bound of |R|, as for FA's B: ``"kaiming"`` (default) 1/√fan_in, ``"xavier"``
    √(6/(fan_in+fan_out)).
constrain_weights : if True, W is rescaled in place to the Frobenius norm it had at
    conversion, once per step before the forward uses it (BioTorch's option); R is drawn for
    the rescaled W.

Sources, choices and measurements: docs/rules.md#brsf
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import BOOLS, STEP_MIX, Feedback, RandomInitRule, check_choice, fingerprint, init_bound, new_seed, resize_norm
from .registry import register
from .sign import SignFeedback

def draw_magnitudes(out: Tensor, bound: float, generator: torch.Generator) -> Tensor:
    """Fill ``out`` with (k + ½)·bound/256, k uniform on {0, …, 255}: 8 draws per random word."""
    n = out.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2**63, 2**63 - 1, generator=generator)
    levels = words.view(torch.uint8)[:n].view(out.shape)
    return out.copy_(levels).add_(0.5).mul_(bound / 256)


class ResampledSignFeedback(SignFeedback):
    def __init__(self, weight: Tensor, init: str, seed: int, constrain_weights: bool = False) -> None:
        super().__init__(weight if constrain_weights else None)
        self.init = init
        self.bound = init_bound(weight, init)
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        R = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        self.register_buffer("R", draw_magnitudes(R, self.bound, self.draw_generator()))
        self.register_buffer("drawn_for", fingerprint(weight))

    @property
    def weight_shape(self) -> torch.Size:
        return self.R.shape

    def resize(self, weight: Tensor) -> None:
        """R is redrawn for the new shape (it is redrawn every step anyway)."""
        self.bound = init_bound(weight, self.init)
        R = torch.empty(weight.shape, dtype=self.R.dtype, device=self.R.device)
        self.R = draw_magnitudes(R, self.bound, self.draw_generator())
        self.drawn_for = fingerprint(weight)
        resize_norm(self, weight)

    def draw_generator(self) -> torch.Generator:
        """A CPU generator for the next draw; advances ``step``."""
        g = torch.Generator().manual_seed((int(self.seed) + int(self.step) * STEP_MIX) % 2**63)
        self.step += 1
        return g

    def magnitudes(self, weight: Tensor) -> Tensor:
        stamp = fingerprint(weight)
        if not torch.equal(stamp, self.drawn_for):
            draw_magnitudes(self.R, self.bound, self.draw_generator())
            self.drawn_for.copy_(stamp)
        return self.R


@register
@dataclass
class BRSF(RandomInitRule):
    """brSF: B = |R| ⊙ sign(W), R redrawn each step."""

    name = "brsf"
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return ResampledSignFeedback(weight, self.init, new_seed(), self.constrain_weights)
