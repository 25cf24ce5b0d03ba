"""Feedback Alignment (Lillicrap, Cownden, Tweed & Akerman 2016, Nat. Commun. 7:13276).

Errors travel back through a fixed random matrix B_l instead of W_lᵀ:

    δ_l = B_{l+1} δ_{l+1} ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

(B here is stored shaped like W, so the layer's input gradient is ``grad_out @ B``; a conv's
is a transposed conv with the random kernel B, Lance & Kieu 2026's "FA (Toeplitz)".) The
weight update is the true local one; the forward weights come to align with B.

``conv_feedback="untied"`` gives every output position of a Conv1d/Conv2d its own random
kernel B_l (a locally connected layer's transpose): grad_x = Σ_l fold(B_lᵀ δ[:, :, l]). The
kernels are drawn from the ``seed`` buffer at the first backward and redrawn from it when the
number of positions L changes, so they are not in the state dict; they take L·|W| floats
(LeNet-5's first conv: 28·28·150 = 118 k; a 64→64 3×3 conv on 32×32 maps: 37.7 M, 151 MB).
Under ``torch.compile`` the draw is an operator the graph keeps opaque (``alignlab::fa_untied``):
a compiled backward draws the same kernels (at every backward: it keeps no cache), without a
graph break.

Options
-------
init : ``"kaiming"`` (default) draws B from the distribution PyTorch gives a fresh layer's
    weight, U(±1/√fan_in); ``"xavier"`` from U(±√(6/(fan_in+fan_out))) as BioTorch does;
    ``"normal"`` from N(0, std²) as Lance & Kieu do.
match_norm : if True, B is rescaled every step to W's Frobenius norm (‖B‖ = ‖W‖), so the
    backward signal grows and shrinks with the forward weights.
std : σ of ``init="normal"`` (default 0.1; unused otherwise).
constrain_weights : if True, W is rescaled in place to the Frobenius norm it had at
    conversion, once per step before the forward uses it (BioTorch's option).
conv_feedback : ``"shared"`` (default) one kernel for every position; ``"untied"`` an
    independent kernel at every output position of a Conv1d/Conv2d (Linear layers: shared),
    as above; with ``match_norm`` and ``constrain_weights`` off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..nn.functional import locally_connected_input_grad
from .base import (BOOLS, Feedback, RandomInitRule, StepCache, check_choice, check_drawn_init,
                   draw_like, grown, new_seed, resize_norm)
from .registry import register

CONV_FEEDBACK = ("shared", "untied")


class FixedFeedback(Feedback):
    """A fixed random B (a buffer: saved in state dicts, never trained)."""

    def __init__(self, B: Tensor, match_norm: bool = False, init: str = "kaiming", std: float = 0.1,
                 constrain_weights: Tensor | None = None) -> None:
        super().__init__(constrain_weights)
        self.register_buffer("B", B)
        self.match_norm, self.init, self.std = match_norm, init, std
        self._cache = StepCache()

    @property
    def weight_shape(self) -> torch.Size:
        return self.B.shape

    def resize(self, weight: Tensor) -> None:
        """Existing entries kept, new ones drawn as at conversion."""
        self.B = grown(self.B, draw_like(weight, self.init, self.std))
        resize_norm(self, weight)

    def matrix(self, weight: Tensor) -> Tensor:
        if not self.match_norm:
            return self.B
        if torch.compiler.is_compiling():  # in a compiled graph: every call (the cache would break it)
            return self._matched(weight.detach())
        return self._cache.get(weight, self._matched)

    def _matched(self, w: Tensor) -> Tensor:
        """B rescaled to ‖W‖_F (match_norm)."""
        return self.B * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(self.B))


class UntiedFeedback(Feedback):
    """An independent random kernel at every output position of a conv, drawn from a seed."""

    own_input_grad = True

    def __init__(self, weight: Tensor, init: str, std: float, seed: int) -> None:
        super().__init__()
        self.shape, self.init, self.std = weight.shape, init, std
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.kernels: Tensor | None = None  # (L, C_out, C_in/groups·∏k), built in the first backward

    @property
    def weight_shape(self) -> torch.Size:
        return self.shape

    def resize(self, weight: Tensor) -> None:
        self.shape, self.kernels = weight.shape, None

    def kernels_for(self, positions: int, like: Tensor) -> Tensor:
        """The L kernels, each drawn as fa's B; the first positions' draws never change."""
        if torch.compiler.is_compiling():
            return _untied_op(self.seed, positions, list(self.shape), self.init, self.std, like.dtype, like.device)
        K = self.kernels
        if K is None or K.shape[0] != positions or K.dtype != like.dtype or K.device != like.device:
            self.kernels = K = untied_kernels(int(self.seed), positions, self.shape, self.init, self.std,
                                              like.dtype, like.device)
        return K

    def input_grad(self, grad: Tensor, x_shape: torch.Size, conv=None) -> Tensor:
        if conv is None:
            raise RuntimeError(f"{self.rule_name}: untied feedback of layer {self.layer!r} is for convs")
        positions = math.prod(conv.out_shape)
        return locally_connected_input_grad(grad, self.kernels_for(positions, grad), x_shape, conv)

    def extra_repr(self) -> str:
        return f"untied kernels {tuple(self.shape)} at every output position"


def untied_kernels(seed: int, positions: int, shape, init: str, std: float, dtype: torch.dtype,
                   device: torch.device) -> Tensor:
    """(L, C_out, C_in/groups·∏k): L kernels shaped like W (``shape``), each drawn as fa's B, in
    turn from one CPU generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    one = torch.empty(shape)
    draws = torch.stack([draw_like(one, init, std, g).flatten(1) for _ in range(positions)])
    return draws.to(device=device, dtype=dtype)


@torch.library.custom_op("alignlab::fa_untied", mutates_args=())
def _untied_op(seed: Tensor, positions: int, shape: list[int], init: str, std: float, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    """:func:`untied_kernels` as an operator torch.compile keeps opaque (dynamo cannot trace a
    generator)."""
    return untied_kernels(int(seed), positions, shape, init, std, dtype, device)


@_untied_op.register_fake
def _(seed, positions, shape, init, std, dtype, device):
    return torch.empty(positions, shape[0], math.prod(shape[1:]), dtype=dtype, device=device)


@register
@dataclass
class FA(RandomInitRule):
    """Feedback Alignment: fixed random feedback B, shaped like W."""

    name = "fa"
    init: str = "kaiming"  # "kaiming" U(±1/√fan_in) | "xavier" U(±√(6/(fan_in+fan_out))) | "normal" N(0, std²)
    match_norm: bool = False  # rescale B to ‖W‖ every step
    std: float = 0.1  # σ of init="normal" (Lance & Kieu's FA: 0.01)
    constrain_weights: bool = False  # hold ‖W‖_F at its value at conversion (BioTorch)
    conv_feedback: str = "shared"  # "shared": one kernel (Toeplitz) | "untied": a kernel at every position

    def __post_init__(self) -> None:
        check_drawn_init(self.name, self.init, self.std)
        check_choice(self.name, "constrain_weights", self.constrain_weights, BOOLS)
        check_choice(self.name, "conv_feedback", self.conv_feedback, CONV_FEEDBACK)
        if self.conv_feedback == "untied" and (self.match_norm or self.constrain_weights):
            raise ValueError("rule 'fa': conv_feedback='untied' works with match_norm=False and constrain_weights=False")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        if self.conv_feedback == "untied" and weight.dim() > 2:
            if weight.dim() > 4:
                raise ValueError("rule 'fa': conv_feedback='untied' supports Conv1d and Conv2d, not Conv3d")
            return UntiedFeedback(weight, self.init, self.std, new_seed())
        return FixedFeedback(draw_like(weight, self.init, self.std), self.match_norm, self.init, self.std,
                             weight if self.constrain_weights else None)
