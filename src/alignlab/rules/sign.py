"""Shared parts of the sign-symmetry rules (uSF, brSF, frSF).

Liao, Leibo & Poggio 2016 (arXiv 1510.05067) showed that feedback needs only the *signs* of
the forward weights; Moskovitz, Litwin-Kumar & Abbott 2018 (arXiv 1812.06488) named the
variants used here. Every one has B = M ⊙ sign(W) for some non-negative magnitudes M.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Feedback, StepCache, fan_in_out

SCALES = ("rms", "xavier", "kaiming", "spectral")


def check_scale(rule: str, scale) -> None:
    """``scale`` must be one of :data:`SCALES` or a positive number."""
    ok = scale in SCALES or (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0)
    if not ok:
        raise ValueError(f"rule {rule!r}: scale={scale!r} is not valid; choose 'rms', 'xavier', 'kaiming', "
                         "'spectral' or a positive number")


def spectral_norm(t: Tensor) -> Tensor:
    """The largest singular value of ``t`` seen as a matrix (rows: dim 0; a conv kernel
    (out, in, *k) as (out, in·∏k), as ``torch.nn.utils.spectral_norm`` sees it), computed
    exactly (singular values) in at least float32."""
    m = t.reshape(t.shape[0], -1)
    if m.dtype not in (torch.float32, torch.float64):
        m = m.float()
    with torch.autocast(m.device.type, enabled=False):
        return torch.linalg.matrix_norm(m, ord=2)


def sign_scale(weight: Tensor, scale) -> Tensor | float:
    """The factor s in B = s·sign(W).

    ``"rms"``: s = ‖W‖_F / √numel(W), so ‖B‖_F = ‖W‖_F (when no entry of W is 0);
    ``"xavier"``: s = √(2/(fan_in+fan_out)), the standard deviation of Glorot's uniform init
    (Xiao, Chen, Liao & Poggio 2018; BioTorch's uSF with init "xavier");
    ``"kaiming"``: s = 1/√(3·fan_in), the standard deviation of PyTorch's default
    U(±1/√fan_in) (BioTorch's uSF with init "kaiming");
    ``"spectral"``: s = ‖W‖₂/‖sign(W)‖₂ (spectral norms of the matrix views), so ‖B‖₂ = ‖W‖₂;
    a number: that constant (1.0 gives Liao's plain sign(W)).
    """
    if scale == "rms":
        # torch.linalg directly: Tensor.norm is a Python wrapper that costs more than the
        # reduction itself on small weights
        return torch.linalg.vector_norm(weight).mul_(1 / math.sqrt(weight.numel()))
    if scale == "xavier":
        fan_in, fan_out = fan_in_out(weight)
        return math.sqrt(2 / (fan_in + fan_out))
    if scale == "kaiming":
        fan_in, _ = fan_in_out(weight)
        return 1 / math.sqrt(3 * fan_in)
    if scale == "spectral":
        s = spectral_norm(weight) / spectral_norm(torch.sign(weight)).clamp(min=torch.finfo(torch.float32).tiny)
        return s.to(weight.dtype)
    return float(scale)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def memory_format_of(w: Tensor) -> torch.memory_format:
    """channels_last (_3d) for a kernel stored NHWC (NDHWC) and not also contiguous, else
    contiguous_format."""
    fmt = _CHANNELS_LAST.get(w.dim())
    nhwc = fmt is not None and not w.is_contiguous() and w.is_contiguous(memory_format=fmt)
    return fmt if nhwc else torch.contiguous_format


class SignFeedback(Feedback):
    """Base: B = magnitudes ⊙ sign(W), rebuilt once each time W changes.

    In eager mode B is written in place into one tensor kept for the purpose (two passes over
    W, no new memory per step); in a ``torch.compile`` graph it is computed from W at every call
    (the compiler fuses the passes; a cache keyed on W's version would break the graph). Like W
    itself, which the optimizer changes in place, the B a graph saved must not be rebuilt before
    that graph's backward: autograd's version check then raises, as it does for BP when W is
    stepped between forward and backward.

    ``constrain_weights`` (a weight given at construction): W is first rescaled in place to the
    Frobenius norm it had then (:func:`alignlab.rules.base.hold_norm`), once per step.
    """

    def __init__(self, constrain_weights: Tensor | None = None) -> None:
        super().__init__(constrain_weights)
        self._cache = StepCache()
        self._out: Tensor | None = None

    def magnitudes(self, weight: Tensor) -> Tensor | float:
        """M in B = M ⊙ sign(W) for this W: a number, a 0-dim tensor or a tensor shaped like W."""
        raise NotImplementedError

    def matrix(self, weight: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            # in a torch.compile graph B is built from W at every call (the compiler fuses the
            # passes); the version-keyed cache below is eager mode's, and would break the graph
            w = weight.detach()
            return torch.sign(w) * self.magnitudes(w)
        return self._cache.get(weight, self._build)

    def _kept(self, w: Tensor) -> Tensor:
        """The tensor B is written into (a new one when W's shape, dtype, device or memory
        format changed: a channels-last kernel gets a channels-last B)."""
        out, fmt = self._out, memory_format_of(w)
        if (out is None or out.shape != w.shape or out.dtype != w.dtype or out.device != w.device
                or not out.is_contiguous(memory_format=fmt)):
            out = self._out = torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt)
        return out

    def _build(self, w: Tensor) -> Tensor:
        out = self._kept(w)
        torch.sign(w, out=out)
        return out.mul_(self.magnitudes(w))
