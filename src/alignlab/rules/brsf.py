"""Batchwise random-magnitude sign-concordant feedback, brSF (Moskovitz, Litwin-Kumar &
Abbott 2018, arXiv 1812.06488; Liao et al. 2016):

    B_l = |R_l| ⊙ sign(W_l),   R_l redrawn every time W_l changes (each mini-batch)

R is drawn like FA's B (``init``). Each draw comes from a generator seeded by the layer's
``seed`` and a draw counter ``step``, so processes that share a seed draw the same R without
talking to each other. The current |R| and a fingerprint of the W it was drawn for (Σw, Σw²
in float64) are buffers too: a new R is drawn exactly when W differs from that fingerprint,
however many forward passes (diagnostics, evaluation) run in between, and a run resumed from
a checkpoint replays the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Feedback, RandomInitRule, new_seed, random_like
from .registry import register
from .sign import SignFeedback

_MIX = 0x9E3779B97F4A7C15 % 2**63  # spreads (seed, step) pairs over the seed space


def fingerprint(weight: Tensor) -> Tensor:
    w = weight.detach().double()
    return torch.stack([w.sum(), (w * w).sum()])


class ResampledSignFeedback(SignFeedback):
    def __init__(self, weight: Tensor, init: str, seed: int) -> None:
        super().__init__()
        self.init = init
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("R", random_like(weight, init, self.draw_generator()).abs())
        self.register_buffer("drawn_for", fingerprint(weight))

    def draw_generator(self) -> torch.Generator:
        """A CPU generator for the next draw; advances ``step``."""
        g = torch.Generator().manual_seed((int(self.seed) + int(self.step) * _MIX) % 2**63)
        self.step += 1
        return g

    def magnitudes(self, weight: Tensor) -> Tensor:
        stamp = fingerprint(weight)
        if not torch.equal(stamp, self.drawn_for):
            self.R = random_like(weight, self.init, self.draw_generator()).abs()
            self.drawn_for = stamp
        return self.R


@register
@dataclass
class BRSF(RandomInitRule):
    """brSF: B = |R| ⊙ sign(W), R redrawn each step."""

    name = "brsf"

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return ResampledSignFeedback(weight, self.init, new_seed())
