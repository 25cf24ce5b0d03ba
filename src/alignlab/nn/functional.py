"""Autograd functions of the feedback layers.

Every rule shares one backward: the weight (and bias) gradient is the true local one,
ΔW = δᵀx, and only the gradient sent to the input changes:

* matrix rules (FA, sign-symmetry, KP): grad_x = δ · B, with B in W's place;
* direct rules (DFA): grad_x = eᵀB_l, a projection of the output error (``feedback.project``),
  in the layer's backward (eagerly) or in the pass's collector (under torch.compile; :mod:`.direct`);
* product rules (PFA, LDFA): grad_x = δ · B · R, two factors in turn (:mod:`.product`).

If B requires grad (KP), it receives ΔW as its gradient. The forward pass is PyTorch's own.
Under autocast the forward computes in the autocast dtype, the input is saved in that dtype
(as BP saves it), the backward runs in the gradient's dtype with B cast to it, and autograd
casts each returned gradient back to its parameter's dtype.
Only the input and the feedback tensor are saved for backward, never the output. Convs use
one fused ``aten.convolution_backward`` with B in the weight slot: it returns the
B-propagated input gradient and the true weight gradient in one call, and skips whatever
is not needed (the first layer's input gradient, above all).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from .direct import Entry, collecting, input_grads, open_slot
from .mode import exact_enabled
from .product import ConvProductFn, LinearProductFn
from .saved import as_computed, conv_forward, rows


class ConvCall(NamedTuple):
    """What a direct-feedback conv's backward tells ``Feedback.project`` about the conv."""

    out_shape: torch.Size  # the layer output's positions (*spatial)
    kernel: torch.Size
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def _direct_input_grad(ctx, x: Tensor, conv: ConvCall | None, need_x: bool, params: tuple):
    """A direct layer's backward on the hook route: (input gradient, params' gradients)."""
    needs = ctx.needs_input_grad[ctx.first_param:]
    if not (need_x or any(needs)):
        return None, (None,) * len(needs)
    return input_grads(ctx.feedback, ctx.slot, x, conv, need_x, params, needs)


class LinearFeedbackFn(Function):
    """y = x Wᵀ + b; grad_x = δ B (or the projected output error: direct rules, whose learned
    tensors ``params`` get their gradients here); grad_W = δᵀx (also B's gradient if B learns)."""

    @staticmethod
    def forward(ctx, x, weight, bias, matrix, feedback, slot, *params):
        ctx.save_for_backward(as_computed(x), matrix, *params)
        ctx.feedback, ctx.slot, ctx.first_param = feedback, slot, 6
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, matrix, *params = ctx.saved_tensors
        need_x, need_w, need_b, need_m = ctx.needs_input_grad[:4]
        g2, x2 = rows(grad, x)
        grad_x = grad_w = grad_b = None
        pgrads = ()
        if ctx.slot is not None:
            grad_x, pgrads = _direct_input_grad(ctx, x, None, need_x, params)
        elif need_x:
            if ctx.feedback.own_input_grad:
                grad_x = ctx.feedback.input_grad(grad, x.shape, None)
            else:
                grad_x = grad @ matrix.to(grad.dtype)
        if need_w or need_m:
            grad_w = g2.mT @ x2
        if need_b:
            grad_b = g2.sum(0)
        return grad_x, grad_w if need_w else None, grad_b, grad_w if need_m else None, None, None, *pgrads


class ConvFeedbackFn(Function):
    """N-d convolution whose input gradient is a transposed conv with B instead of W (or, for
    direct rules, the projected output error, as in :class:`LinearFeedbackFn`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, matrix, feedback, slot, stride, padding, dilation, groups, *params):
        # direct rules never touch the backward conv's input path, but the call needs a
        # tensor of the weight's shape in the weight slot; W itself costs nothing to keep
        ctx.save_for_backward(as_computed(x), weight if matrix is None else matrix, *params)
        ctx.feedback, ctx.slot, ctx.first_param = feedback, slot, 10
        return conv_forward(ctx, x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, matrix, *params = ctx.saved_tensors
        need_x, need_w, need_b, need_m = ctx.needs_input_grad[:4]
        direct = ctx.slot is not None
        own = ctx.feedback.own_input_grad
        stride, padding, dilation, groups = ctx.conv
        mask = [need_x and not direct and not own, need_w or need_m, need_b]
        grad_x = grad_w = grad_b = None
        pgrads = ()
        if any(mask):
            zeros = [0] * (x.dim() - 2)
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x.to(grad.dtype), matrix.to(grad.dtype), ctx.bias_sizes, stride, padding, dilation,
                False, zeros, groups, mask,
            )
        if direct:
            call = ConvCall(grad.shape[2:], matrix.shape[2:], stride, padding, dilation, groups)
            grad_x, pgrads = _direct_input_grad(ctx, x, call, need_x, params)
        elif need_x and own:
            call = ConvCall(grad.shape[2:], matrix.shape[2:], stride, padding, dilation, groups)
            grad_x = ctx.feedback.input_grad(grad, x.shape, call)
        nones = (None,) * 6
        return (grad_x, grad_w if need_w else None, grad_b, grad_w if need_m else None) + nones + tuple(pgrads)


def follow(feedback, weight: Tensor) -> None:
    """Rebuild ``feedback`` for ``weight``'s shape when the weight was replaced by one of another
    shape (resized embeddings with a tied head, a resized model's state dict)."""
    shape = feedback.weight_shape
    if shape is not None and shape != weight.shape:
        feedback.resize(weight)


def route(feedback, x: Tensor, weight: Tensor):
    """(matrix, slot) for this call, or None where exact transport applies; direct feedback:
    (None, the pass's error slot)."""
    feedback.prepare(weight)
    if not torch.is_grad_enabled() or exact_enabled():
        return None
    if feedback.direct:
        return None, open_slot(feedback)
    follow(feedback, weight)
    if feedback.own_input_grad:
        return weight.detach(), None  # fills the fused conv call's weight slot; input_grad sends δ back
    matrix = feedback.matrix(weight)
    return None if matrix is None else (matrix, None)


def _factors(feedback, weight: Tensor):
    """(B, R) where ``feedback`` sends errors through two factors in turn on this call, else None."""
    if not (feedback.has_factors and torch.is_grad_enabled() and not exact_enabled()):
        return None
    feedback.prepare(weight)
    follow(feedback, weight)
    return feedback.factors(weight)


def feedback_linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback) -> Tensor:
    """``F.linear`` whose backward sends errors through ``feedback`` (or its two factors)."""
    factors = _factors(feedback, weight)
    if factors is not None:
        return LinearProductFn.apply(x, weight, bias, *factors, feedback)
    routed = route(feedback, x, weight)
    if routed is None:
        return F.linear(x, weight, bias)
    matrix, slot = routed
    if slot is None:
        return LinearFeedbackFn.apply(x, weight, bias, matrix, feedback, None)
    params = feedback.direct_params()
    if collecting():  # the traced route: the pass's collector sends x its gradient (alignlab.nn.direct)
        slot.entries.append(Entry(feedback, x, None, params))
        return F.linear(x.detach(), weight, bias)
    slot.used = True
    return LinearFeedbackFn.apply(x, weight, bias, None, feedback, slot, *params)


def feedback_conv(x, weight, bias, feedback, stride, padding, dilation, groups) -> Tensor:
    """N-d convolution (numeric padding) whose backward sends errors through ``feedback``."""
    factors = _factors(feedback, weight)
    if factors is not None:
        return ConvProductFn.apply(x, weight, bias, *factors, feedback, stride, padding, dilation, groups)
    routed = route(feedback, x, weight)
    if routed is None:
        zeros = [0] * (x.dim() - 2)
        return torch.convolution(x, weight, bias, stride, padding, dilation, False, zeros, groups)
    matrix, slot = routed
    if slot is None:
        return ConvFeedbackFn.apply(x, weight, bias, matrix, feedback, None, stride, padding, dilation, groups)
    params = feedback.direct_params()
    if collecting():  # the traced route: the pass's collector sends x its gradient (alignlab.nn.direct)
        zeros = [0] * (x.dim() - 2)
        y = torch.convolution(x.detach(), weight, bias, stride, padding, dilation, False, zeros, groups)
        call = ConvCall(y.shape[2:], weight.shape[2:], tuple(stride), tuple(padding), tuple(dilation), groups)
        slot.entries.append(Entry(feedback, x, call, params))
        return y
    slot.used = True
    return ConvFeedbackFn.apply(x, weight, bias, None, feedback, slot, stride, padding, dilation, groups, *params)


def locally_connected_input_grad(grad: Tensor, kernels: Tensor, x_shape: torch.Size, conv: ConvCall) -> Tensor:
    """The input gradient of a Conv1d/2d whose kernel differs at every output position (a
    locally connected layer's transpose): ``kernels`` is (L, C_out, C_in/groups·∏k), L the
    number of output positions, grad (N, C_out, *out). Each position's error goes back through
    its own kernel, cols[n, :, l] = kernels[l]ᵀ grad[n, :, l] (group by group), and the columns
    are folded onto the input as the conv's unfold would have cut them."""
    spatial = len(x_shape) - 2
    if spatial not in (1, 2):
        raise NotImplementedError("locally connected feedback supports Conv1d and Conv2d")
    n, c_out, groups = grad.shape[0], grad.shape[1], conv.groups
    per = kernels.shape[-1]
    g = grad.reshape(n, groups, c_out // groups, -1)
    k = kernels.to(grad.dtype).view(kernels.shape[0], groups, c_out // groups, per)
    cols = torch.einsum("ngol,lgoc->ngcl", g, k).reshape(n, groups * per, -1)
    def lift(t, first: int = 1) -> tuple:  # a Conv1d's geometry as a 2-D conv of height 1
        return tuple(t) if spatial == 2 else (first, *t)

    out = F.fold(cols, lift(x_shape[2:]), lift(conv.kernel), dilation=lift(conv.dilation),
                 padding=lift(conv.padding, 0), stride=lift(conv.stride))
    return out.view(x_shape)
