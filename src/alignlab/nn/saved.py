"""What the feedback layers' backward passes read: the saved input, as BP would save it."""

from __future__ import annotations

import torch
from torch import Tensor


def as_computed(x: Tensor) -> Tensor:
    """``x`` in the dtype autocast gives the layer's matmul/conv (what BP would save)."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(kind))
    return x


def rows(grad: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """A Linear's output error and (saved) input as 2-D row matrices, x in the error's dtype."""
    x = x.to(grad.dtype)
    if grad.dim() == 2:
        return grad, x
    return grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])


def conv_forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups) -> Tensor:
    """Run a feedback conv's forward, recording on ``ctx`` what its backward's
    ``convolution_backward`` call needs: the geometry (``ctx.conv``) and the bias shape."""
    ctx.conv = (stride, padding, dilation, groups)
    ctx.bias_sizes = None if bias is None else list(bias.shape)
    zeros = [0] * (x.dim() - 2)
    return torch.convolution(x, weight, bias, stride, padding, dilation, False, zeros, groups)
