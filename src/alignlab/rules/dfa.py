"""Direct Feedback Alignment (Nøkland 2016, arXiv 1609.01596).

The output error e = ∂L/∂y goes straight to every layer through a fixed random matrix:

    δ_l = (B_l e) ⊙ f′(a_l),   ΔW_l = −η δ_l x_lᵀ

Here each converted layer replaces the gradient it sends to its input x by a projection e B of
e (B: C × D, C the output's features, D the layer input's), so the nonlinearity below multiplies
it by f′; the weight gradient stays the true local δ xᵀ, and no backward matmul or convolution
through W is done at all. Where a Linear's input has exactly the output's positions (a language
model's tokens), each position gets its own error e[n, s] B. Otherwise ``project`` says how:
``"broadcast"`` sends each sample's error summed over its output positions, ē_n B, to every
input position (shapes may change from step to step); ``"dense"`` maps each sample's whole
flattened output to its whole flattened input (the shapes must stay those of the first pass).

B is drawn from U(±scale/√C) by a generator seeded at conversion (the ``seed`` buffer), the
first time the layer's backward runs, and rebuilt from that seed whenever C changes (a resized
output layer: the existing rows keep their draws, rescaled to the new bound) or the layer moves
to another device or dtype. So B itself is not in the state dict: the seed is, and ranks and
resumed runs rebuild the same B. Under torch.compile it is drawn (the same numbers) at the end
of the first compiled forward pass that needs it, through an operator dynamo keeps opaque (it
cannot trace a generator); the graph is then compiled once more, with B as its input.

Options
-------
scale : B ~ U(±scale/√C), so the error each unit receives is on the scale of e's entries
    (default 1.0).
project : ``"broadcast"`` (default; works whatever the shapes) or ``"dense"`` (a separate
    weight for every position; for a CNN whose shapes never change), as above; or
    ``"kernel"``, BioTorch's conv DFA: in a conv, ē is repeated at every output position and
    sent back by the transposed conv (the layer's stride, padding, dilation; groups 1) with a
    kernel-shaped B (C × D × k…), drawn from U(±scale/√C)/√∏k; Linear layers as broadcast.

Works through a plain ``loss_fn(model(x), y).backward()`` and an in-model loss
(``model(**batch).loss.backward()``): see :mod:`alignlab.nn.direct` and ``convert``'s ``output=``;
under ``torch.compile(fullgraph=True)`` too, with the loss computed from the model's output
outside it (the traced route of :mod:`alignlab.nn.direct`).

Sources, choices and measurements: docs/rules.md#dfa
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..nn.direct import check_batch, per_position, spread, summed
from .base import Feedback, Rule, check_choice, new_seed
from .registry import register

PROJECTIONS = ("broadcast", "dense", "kernel")


class DirectFeedback(Feedback):
    """A fixed random B from the output error to this layer's input, rebuilt from its seed."""

    direct = True

    def __init__(self, scale: float, seed: int, project: str = "broadcast") -> None:
        super().__init__()
        self.scale, self.mode = scale, project
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.B: Tensor | None = None  # built when first needed; see weights()
        self.register_load_state_dict_pre_hook(_drop_saved_b)

    def matrix(self, weight: Tensor) -> None:
        return None

    def weights(self, rows: int, cols: int, like: Tensor) -> Tensor:
        """B (rows × cols) in ``like``'s dtype and device, drawn from the seed on first use."""
        B = self.B
        if B is not None and B.shape == (rows, cols) and B.dtype == like.dtype and B.device == like.device:
            return B
        if B is not None and self.mode == "dense" and B.shape != (rows, cols):
            raise ValueError(
                f"{self.rule_name}: layer {self.layer!r} with project='dense' needs the shapes of its first pass "
                f"(feedback {tuple(B.shape)}, now {rows} × {cols}); use project='broadcast' for varying shapes")
        self.B = _drawn(self.seed, rows, cols, self.scale / math.sqrt(rows), like)
        return self.B

    def direct_tensors(self, error_shape, x_shape: torch.Size, conv, like: Tensor) -> tuple[Tensor]:
        """(B,) for an output error shaped ``error_shape`` and this call (alignlab.nn.direct)."""
        check_batch(self, error_shape, x_shape)
        c = error_shape[-1]
        d = x_shape[1] if conv is not None else x_shape[-1]
        if per_position(error_shape, x_shape, conv):
            return (self.weights(c, d, like),)
        if self.mode == "dense":
            return (self.weights(math.prod(error_shape[1:]), math.prod(x_shape[1:]), like),)
        if self.mode == "kernel" and conv is not None:
            return (self.weights(c, d * math.prod(conv.kernel), like),)
        return (self.weights(c, d, like),)

    def direct_grads(self, error: Tensor, x, x_shape: torch.Size, conv, params, tensors, need_x: bool, needs):
        """(the input gradient, no learned tensors' gradients): see :meth:`project`."""
        return (_projected(self.mode, error, tensors[0], x_shape, conv) if need_x else None), ()

    def project(self, error: Tensor, x_shape: torch.Size, conv=None) -> Tensor:
        """The input gradient: the output error projected through B, shaped like the input."""
        return _projected(self.mode, error, self.direct_tensors(error.shape, x_shape, conv, error)[0], x_shape, conv)

    def extra_repr(self) -> str:
        return f"project={self.mode!r}, scale={self.scale}"


def _projected(mode: str, error: Tensor, B: Tensor, x_shape: torch.Size, conv) -> Tensor:
    """The output error (N, *positions, C) through B to an input shaped ``x_shape``: per position,
    dense (flattened output to flattened input), through the kernel, or ē to every position."""
    if per_position(error.shape, x_shape, conv):
        return error @ B  # one error per position
    if mode == "dense":
        return (error.reshape(error.shape[0], -1) @ B).reshape(x_shape)
    e = summed(error)  # (n, c): each sample's error summed over positions
    if mode == "kernel" and conv is not None:
        return _through_kernel(e, B, x_shape, conv)
    return spread(e @ B, x_shape, conv)


def _draw(seed: int, rows: int, cols: int, bound: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """U(±bound), rows × cols, from a CPU generator seeded by ``seed`` (row-major: the first rows
    never change with the number of rows)."""
    g = torch.Generator().manual_seed(seed)
    draw = 2 * torch.rand(rows, cols, generator=g) - 1
    return (draw * bound).to(device=device, dtype=dtype)


@torch.library.custom_op("alignlab::dfa_draw", mutates_args=())
def _draw_op(seed: Tensor, rows: int, cols: int, bound: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`_draw` as an operator that torch.compile keeps opaque (dynamo cannot trace a generator)."""
    return _draw(int(seed), rows, cols, bound, dtype, device)


@_draw_op.register_fake
def _(seed, rows, cols, bound, dtype, device):
    return torch.empty(rows, cols, dtype=dtype, device=device)


def _drawn(seed: Tensor, rows: int, cols: int, bound: float, like: Tensor) -> Tensor:
    """:func:`_draw` from the ``seed`` buffer, in ``like``'s dtype and device; under torch.compile
    through :func:`_draw_op`, so that a compiled pass draws B in its forward (and keeps it)."""
    if torch.compiler.is_compiling():
        return _draw_op(seed, rows, cols, bound, like.dtype, like.device)
    return _draw(int(seed), rows, cols, bound, like.dtype, like.device)


_CONV_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


def _through_kernel(e: Tensor, B: Tensor, x_shape: torch.Size, conv) -> Tensor:
    """BioTorch's conv DFA: ē (n, C) repeated at every output position, then the transposed
    conv with the kernel-shaped B (C, D, *k)/√∏k and the layer's stride, padding, dilation."""
    k = conv.kernel
    grad_out = e.view(*e.shape, *(1,) * len(k)).expand(*e.shape, *conv.out_shape)
    kernel = B.view(e.shape[1], x_shape[1], *k) / math.sqrt(math.prod(k))
    return _CONV_INPUT[len(k)](x_shape, kernel, grad_out.contiguous(), conv.stride, conv.padding, conv.dilation, 1)


def _drop_saved_b(module, state_dict, prefix: str, *_) -> None:
    """Checkpoints from before B was rebuilt from the seed hold it: it is not loaded."""
    state_dict.pop(prefix + "B", None)


@register
@dataclass
class DFA(Rule):
    """DFA: every layer's input gradient is a projection of the output error e."""

    name = "dfa"
    direct = True
    scale: float = 1.0  # B ~ U(±scale/√C)
    project: str = "broadcast"  # "broadcast": ē B to every position | "dense": flattened output → input | "kernel": BioTorch's conv DFA

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ValueError(f"rule 'dfa': scale={self.scale!r} is not valid; give a positive number")
        check_choice(self.name, "project", self.project, PROJECTIONS)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return DirectFeedback(float(self.scale), new_seed(), self.project)
