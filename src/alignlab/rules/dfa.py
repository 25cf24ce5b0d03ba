"""Direct Feedback Alignment (Nøkland 2016, arXiv 1609.01596).

The output error e = ∂L/∂y goes straight to every layer through a fixed random matrix:

    δ_l = (B_l e) ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

Here each converted layer replaces the gradient it sends to its input x by eᵀB (B: out_dim ×
in_dim), so the nonlinearity below multiplies it by f′; the weight gradient stays the true
local δ x ᵀ. No backward matmul or convolution through W is done at all.

Shapes: when the layer input and the model output share their leading dimensions (a Linear
applied per token, or an MLP), B maps e's last dimension to x's last dimension; otherwise
B maps each sample's whole output (flattened) to its whole input (flattened; conv layers),
with the batch as the first dimension of both. B is created at the first forward pass, when
the output's shape is known, from a generator seeded at conversion time.

Options
-------
scale : B is drawn from U(±scale/√d_e), d_e the size of the error vector that B maps, so the
    error each unit receives is on the scale of e's entries (default 1.0).

Works through a plain ``loss_fn(model(x), y).backward()``: see :mod:`alignlab.nn.direct`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Feedback, Rule, new_seed
from .registry import register


class DirectFeedback(Feedback):
    """A fixed random B from the output error to this layer's input."""

    direct = True

    def __init__(self, scale: float, seed: int) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("B", None)

    def matrix(self, weight: Tensor) -> None:
        return None

    def materialize(self, out_shape: torch.Size, x_shape: torch.Size, like: Tensor) -> None:
        """Create B once the output's shape is known (first forward pass)."""
        if len(x_shape) >= 2 and out_shape[:-1] == x_shape[:-1]:
            rows, cols = out_shape[-1], x_shape[-1]
        elif out_shape[0] == x_shape[0]:
            rows, cols = math.prod(out_shape[1:]), math.prod(x_shape[1:])
        else:
            raise ValueError(
                f"dfa: cannot map the output {tuple(out_shape)} to a layer input {tuple(x_shape)}: "
                "the batch must be the first dimension of both"
            )
        g = torch.Generator().manual_seed(int(self.seed))
        bound = self.scale / math.sqrt(rows)
        B = (2 * torch.rand(rows, cols, generator=g) - 1) * bound
        self.B = B.to(device=like.device, dtype=like.dtype)

    def project(self, error: Tensor, x_shape: torch.Size) -> Tensor:
        """The input gradient eᵀB, shaped like the layer input."""
        B = self.B
        if error.shape[:-1] == x_shape[:-1] and B.shape == (error.shape[-1], x_shape[-1]):
            return error.to(B.dtype) @ B
        n = error.shape[0]
        if n == x_shape[0] and B.shape == (error[0].numel(), math.prod(x_shape[1:])):
            return (error.reshape(n, -1).to(B.dtype) @ B).reshape(x_shape)
        raise ValueError(
            f"dfa: feedback {tuple(B.shape)} fits neither the output error {tuple(error.shape)} "
            f"nor the layer input {tuple(x_shape)}; shapes must stay as in the first forward pass"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "B"
        if self.B is None and key in state_dict:
            self.B = torch.empty_like(state_dict[key], device=self.seed.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register
@dataclass
class DFA(Rule):
    """DFA: every layer's input gradient is eᵀB_l, e the output error."""

    name = "dfa"
    scale: float = 1.0  # B ~ U(±scale/√d_e)

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ValueError(f"rule 'dfa': scale={self.scale!r} is not valid; give a positive number")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return DirectFeedback(float(self.scale), new_seed())
