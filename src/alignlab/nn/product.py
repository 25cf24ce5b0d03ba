"""Feedback through two factors in turn, B then R (pfa's B·R, ldfa's Pᵀ·Q).

The input gradient is grad_x = δ·B·R, with B (N_out × m) and R (m × N_in, or a kernel
(m, C_in, *k)). Each backward takes the route with fewer multiply-adds for its shapes:

* factored: h = δB (rows × m), grad_x = hR, ∇R = hᵀx: B·R is never formed;
* dense: M = B·R (shaped like W), grad_x = δM, ∇R = Bᵀ∇W (W's own gradient, computed anyway).

Both give the same numbers up to float rounding. Where B learns (ldfa's Pᵀ), its gradient is
``feedback.factor_grad(δ, h, dim)``, from the errors (units along ``dim``: a conv's channels,
never moved last here) and h = δB where the route formed it, returned by this backward like any
gradient, so the whole step traces under ``torch.compile(fullgraph=True)``.

Convs: B is a 1×1 channel mix (C_out × m) and R a kernel with m output channels, so the
factored route runs the transposed conv and R's weight gradient with m channels instead of
C_out (ungrouped convs with an ungrouped mix only; grouped ones take the dense route, with B·R
formed group by group). The weight gradient is the true local one either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from .saved import as_computed, conv_forward, rows

# tests force one route ("dense" or "factored") to compare the two; None: the cheaper one
FORCED: str | None = None


def factored_cheaper(rows: int, n_out: int, n_in: int, m: int, need_x: bool, need_r: bool) -> bool:
    """True when h = δB, hR and hᵀx cost fewer multiply-adds than forming M = B·R, δM and Bᵀ∇W.

    ``rows``: error rows (a Linear's input rows, or a conv's output positions times the batch);
    ``n_in``: W's fan-in (a conv's C_in·∏kernel). h costs rows·n_out·m (it is also needed for B's
    gradient, so it is counted on the factored side only when that route needs it)."""
    if FORCED is not None:
        return FORCED == "factored"
    factored = rows * n_out * m + rows * m * n_in * (int(need_x) + int(need_r))
    dense = (m * n_out * n_in + rows * n_out * n_in) * int(need_x) + m * n_out * n_in * int(need_r)
    return factored < dense


def product(B: Tensor, R: Tensor) -> Tensor:
    """B·R shaped like the layer's weight: per group g, B_g (C_out/g × m) times R_g (m × rest).

    B is (C_out, m), R is (groups·m, C_in/groups, *kernel) or (m, N_in); the number of groups
    is R's rows over B's columns (1 for ldfa, whose Q is shared by a grouped conv's groups)."""
    c_out, m = B.shape
    groups = R.shape[0] // m
    if groups == 1:
        return (B @ R.flatten(1)).view(c_out, *R.shape[1:])
    out = torch.bmm(B.reshape(groups, c_out // groups, m), R.reshape(groups, m, -1))
    return out.reshape(c_out, *R.shape[1:])


def _r_grad(B: Tensor, grad_w: Tensor, r_shape: torch.Size) -> Tensor:
    """R's gradient Bᵀ·∇W of M = B·R, group by group as :func:`product` multiplies."""
    c_out, m = B.shape
    groups = r_shape[0] // m
    if groups == 1:
        return (B.mT @ grad_w.flatten(1)).view(r_shape)
    out = torch.bmm(B.reshape(groups, c_out // groups, m).mT, grad_w.reshape(groups, c_out // groups, -1))
    return out.reshape(r_shape)


class LinearProductFn(Function):
    """y = x Wᵀ + b; grad_x = δ·B·R by the cheaper route; ∇W = δᵀx; B's and R's gradients."""

    @staticmethod
    def forward(ctx, x, weight, bias, B, R, feedback):
        ctx.save_for_backward(as_computed(x), B, R)
        ctx.feedback = feedback
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, B, R = ctx.saved_tensors
        need_x, need_w, need_b, need_f, need_r = ctx.needs_input_grad[:5]
        g2, x2 = rows(grad, x)
        B, R = B.to(g2.dtype), R.to(g2.dtype)
        (n_out, m), n_in = B.shape, R.shape[-1]
        factored = factored_cheaper(g2.shape[0], n_out, n_in, m, need_x, need_r)
        h = g2 @ B if factored else None
        grad_w = g2.mT @ x2 if need_w or (need_r and not factored) else None
        grad_x = grad_r = None
        if need_x:
            grad_x = (h @ R if factored else g2 @ (B @ R)).view(*grad.shape[:-1], n_in)
        if need_r:
            grad_r = h.mT @ x2 if factored else B.mT @ grad_w
        grad_f = ctx.feedback.factor_grad(g2, h, -1) if need_f else None
        grad_b = g2.sum(0) if need_b else None
        return grad_x, grad_w if need_w else None, grad_b, grad_f, grad_r, None


class ConvProductFn(Function):
    """N-d convolution whose input gradient goes through a channel mix B (C_out × m), then a
    kernel R (m or groups·m, C_in/groups, *k), by the cheaper route; ∇W is the true one."""

    @staticmethod
    def forward(ctx, x, weight, bias, B, R, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(as_computed(x), weight, B, R)
        ctx.feedback = feedback
        return conv_forward(ctx, x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight, B, R = ctx.saved_tensors
        need_x, need_w, need_b, need_f, need_r = ctx.needs_input_grad[:5]
        stride, padding, dilation, groups = ctx.conv
        x, B, R = x.to(grad.dtype), B.to(grad.dtype), R.to(grad.dtype)
        (c_out, m), zeros = B.shape, [0] * (x.dim() - 2)
        n_rows = grad.numel() // c_out
        plain = groups == 1 and R.shape[0] == m  # an ungrouped conv and an ungrouped mix
        factored = plain and factored_cheaper(n_rows, c_out, R[0].numel(), m, need_x, need_r)
        need_dense_w = need_r and not factored
        grad_x = grad_r = grad_w = grad_b = h = None
        if need_w or need_b or need_dense_w or (need_x and not factored):
            M = product(B, R) if need_x and not factored else weight.to(grad.dtype)
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, M, ctx.bias_sizes, stride, padding, dilation, False, zeros, groups,
                [need_x and not factored, need_w or need_dense_w, need_b])
        if factored and (need_x or need_r):
            # h = δ mixed by B: a 1×1 convolution with Bᵀ as its kernel, (N, m, *out)
            ones = [1] * len(zeros)
            h = torch.convolution(grad, B.mT.reshape(m, c_out, *ones), None, ones, zeros, ones, False, zeros, 1)
            grad_x, grad_r, _ = torch.ops.aten.convolution_backward(
                h, x, R, None, stride, padding, dilation, False, zeros, 1, [need_x, need_r, False])
        elif need_r:
            grad_r = _r_grad(B, grad_w, R.shape)
        grad_f = ctx.feedback.factor_grad(grad, h, 1) if need_f else None  # every position a sample
        nones = (None,) * 5
        return (grad_x, grad_w if need_w else None, grad_b, grad_f, grad_r) + nones
