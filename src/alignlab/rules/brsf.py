"""Batchwise random-magnitude sign-concordant feedback, brSF (Moskovitz, Litwin-Kumar &
Abbott 2018, arXiv 1812.06488; Liao et al. 2016):

    B_l = |R_l| ⊙ sign(W_l),   R_l redrawn every time W_l changes (each mini-batch)

|R| is uniform on (0, a), with a as for FA's B (``init``; rounded to 15 significant bits, a
relative change below 2⁻¹⁵, so that every level is exact in fp32), drawn at 8-bit resolution:
each entry is (k + ½)·a/256 with k uniform on {0, …, 255} (then cast to W's dtype), so the mean
is a/2 exactly and the variance differs from the continuous U(0, a)'s by 1/65536 of it.

How a draw is made (:func:`draw_magnitudes`): draw number ``step`` of a layer with ``seed`` is
a counter-based hash, computed with integer tensor ops on W's device (so also inside a
``torch.compile`` graph): (seed, step) is hashed to two 32-bit keys m (odd) and c
(:func:`draw_key`), word i of the draw is h(i·m + c mod 2³²), h Wellons' 32-bit integer hash
(:func:`mix32`: x ^= x >> 16, x *= 0x21f0aaad, x ^= x >> 15, x *= 0x735a2d97, x ^= x >> 15),
and each word gives four levels k, its bytes, least significant first. Processes that share a
seed draw the same R without talking to each other, on any device; a draw costs a dozen
integer passes over a quarter of W's size (no CPU generator, no copy between devices; small
CPU draws in numpy).

The current |R|, the draw counter ``step`` and a fingerprint of the W it was drawn for
(``drawn_for``, :func:`fingerprint`: W's bits summed as 64-bit integers, exact, so independent
of summation order and thread count) are buffers too: a new R is drawn exactly when W's bits
change, however many forward passes (diagnostics, evaluation) run in between, and a run resumed
from a checkpoint replays the same draws. Under ``torch.compile`` (``fullgraph=True`` too) the
test and the draw are one operator the graph keeps opaque (``alignlab::brsf_redraw``, mutating
R, ``step`` and ``drawn_for``), so a compiled pass draws exactly when eager mode would, the same
numbers, and B = |R| ⊙ sign(W) is computed in the graph.

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

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import base
from .base import BOOLS, Feedback, RandomInitRule, check_choice, init_bound, new_seed, resize_norm
from .registry import register
from .sign import SignFeedback, memory_format_of

# --- a counter-based random stream from integer ops ------------------------------------------

M32 = 0xFFFFFFFF
_ROUNDS = ((16, 0x21F0AAAD), (15, 0x735A2D97), (15, None))  # Wellons' hash32 ("hash-prospector")


def mix32(x):
    """Wellons' 32-bit integer hash, a bijection of [0, 2³²): x ^= x >> 16; x *= 0x21f0aaad;
    x ^= x >> 15; x *= 0x735a2d97; x ^= x >> 15 (mod 2³²). ``x`` is a Python int or an int64
    tensor with entries in [0, 2³²); the products stay below 2⁶³, so nothing overflows."""
    for shift, mult in _ROUNDS:
        x = x ^ (x >> shift)
        if mult is not None:
            x = (x * mult) & M32
    return x


def draw_key(seed, step):
    """The keys (m, c) of draw ``step`` of ``seed``: two 32-bit hash chains over the 32-bit
    halves of seed and step (in opposite orders), m made odd. ``seed`` and ``step`` are Python
    ints, or int64 tensors (then so are m and c, with the same values)."""
    parts = (seed & M32, (seed >> 32) & M32, step & M32, (step >> 32) & M32)
    m, c = 0x243F6A88, 0x85A308D3  # π's hex digits
    for p in parts:
        m = mix32(m ^ p)
    for p in reversed(parts):
        c = mix32(c ^ p)
    return m | 1, c


def _as_int32(v):
    """A 32-bit word (Python int or int64 tensor in [0, 2³²)) as the int32 with its bits."""
    v = v - ((v >> 31) << 32)
    return v.to(torch.int32) if isinstance(v, Tensor) else v


# eager mode: one int32 arange per device, shared by every layer, grown as needed (1 byte per
# weight of the largest layer drawn)
_IOTA: dict = {}
# eager mode: the rounds' shifts, masks and multipliers as CPU int32 scalars (an op given a
# tensor skips wrapping a Python number: 3 µs instead of 7–9 µs per op on a small layer)
_EAGER_ROUNDS = tuple((torch.tensor(shift, dtype=torch.int32), torch.tensor((1 << (32 - shift)) - 1, dtype=torch.int32),
                       None if mult is None else torch.tensor(mult, dtype=torch.int32)) for shift, mult in _ROUNDS)


def _iota(n: int, device) -> Tensor:
    iota = _IOTA.get(device)
    if iota is None or iota.numel() < n:
        iota = _IOTA[device] = torch.arange(n, dtype=torch.int32, device=device)
    return iota[:n]


_NUMPY_WORDS = 32768  # eager CPU draws up to this many words: numpy (no per-op dispatch), as torch's serial grain


def _numpy_words(n: int, m: int, c: int) -> Tensor:
    """:func:`counter_words` in numpy uint32 (wrapping, logical shifts): the same words."""
    return torch.from_numpy(_numpy_uint32(n, m, c).view(np.int32))


def _numpy_uint32(n: int, m: int, c: int) -> np.ndarray:
    x = np.arange(n, dtype=np.uint32)
    x *= np.uint32(m)
    x += np.uint32(c)
    t = np.empty_like(x)
    for shift, mult in _ROUNDS:
        np.right_shift(x, np.uint32(shift), out=t)
        x ^= t
        if mult is not None:
            x *= np.uint32(mult)
    return x


def counter_words(n: int, m, c, device=None, scratch: Tensor | None = None) -> Tensor:
    """int32 words h(i·m + c mod 2³²), i = 0 … n−1, h = :func:`mix32`, computed with int32
    tensor ops that wrap mod 2³² (shifts masked to be logical). ``m``, ``c``: :func:`draw_key`.
    ``scratch``: an int32 tensor of at least 2n entries to compute in (the words are then a view
    of it), instead of new tensors. CPU draws of at most 32768 words (with int keys) run in numpy
    (uint32), a few µs instead of a dozen torch calls; the words are the same."""
    if isinstance(m, int) and not torch.compiler.is_compiling():  # eager
        where = torch.device(device) if device is not None else getattr(scratch, "device", torch.device("cpu"))
        if where.type == "cpu" and n <= _NUMPY_WORDS:
            return _numpy_words(n, m, c)
    m, c = _as_int32(m), _as_int32(c)
    if scratch is not None and scratch.numel() >= 2 * n and isinstance(m, int):  # eager, in place
        x, t = scratch[:n], scratch[n:2 * n]
        torch.add(torch.tensor(c, dtype=torch.int32), _iota(n, scratch.device), alpha=m, out=x)  # c + m·i
        for shift, mask, mult in _EAGER_ROUNDS:
            x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=t).bitwise_and_(mask))
            if mult is not None:
                x.mul_(mult)
        return x
    x = torch.arange(n, dtype=torch.int32, device=device).mul_(m).add_(c)
    for shift, mult in _ROUNDS:
        x ^= (x >> shift) & ((1 << (32 - shift)) - 1)
        if mult is not None:
            x.mul_(mult)
    return x


def counter_bytes(n: int, seed, step, device=None, scratch: Tensor | None = None) -> Tensor:
    """n uniform bytes (uint8) of draw ``step`` of ``seed``: the bytes of :func:`counter_words`,
    least significant first (a little-endian view). ``scratch``: any contiguous tensor whose
    memory the words may use (see :func:`counter_words`)."""
    m, c = draw_key(seed, step)
    words = (n + 3) // 4
    if scratch is not None:
        raw = scratch.reshape(-1).view(torch.uint8) if scratch.is_contiguous() else None
        scratch = raw[:raw.numel() // 4 * 4].view(torch.int32) if raw is not None else None
    return counter_words(words, m, c, device, scratch).view(torch.uint8)[:n]


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def fingerprint(weight: Tensor) -> Tensor:
    """W's bits summed as 64-bit words (int64, wrapping), shape (1,): one exact pass over W.

    Where W (or its transpose) is laid out densely in a whole number of 8-byte words, those
    words are summed (pairs of fp32 entries: a change of any bit changes the sum unless other
    changes cancel it in both 32-bit halves at once); otherwise each entry's bit pattern, as an
    integer (:func:`alignlab.rules.base.fingerprint`). Either is a function of W's bits alone
    (and its layout, which a layer keeps). 0.07 ms per million fp32 weights on one CPU thread,
    against 0.39 ms for the per-entry sum, which widens every entry to 64 bits first. A kernel
    stored channels-last (NHWC) is summed as its contiguous copy: the same stamp as the NCHW
    kernel, so changing a model's memory format draws nothing new."""
    w = weight.detach()
    if not w.is_contiguous() and w.dim() >= 2 and w.mT.is_contiguous():
        w = w.mT  # a transposed weight (transformers' Conv1D): the same bits, densely stored
    elif memory_format_of(w) is not torch.contiguous_format:
        w = w.contiguous()
    ratio = 8 // w.element_size() if w.element_size() in _INT_OF_SIZE else 0
    # (dynamo cannot read storage_offset(); a parameter starts its storage, so it is aligned)
    aligned = torch.compiler.is_compiling() or w.storage_offset() % max(ratio, 1) == 0
    if ratio and w.is_contiguous() and w.numel() % ratio == 0 and aligned:
        return w.reshape(-1).view(torch.int64).sum().reshape(1)
    return base.fingerprint(w)


# --- brsf --------------------------------------------------------------------------------------


def magnitude_bound(a: float) -> float:
    """``a`` rounded to 15 significant bits (a relative change below 2⁻¹⁵): then every level
    (k + ½)·a/256 = (2k + 1)·a/512 is exact in fp32, so each way of computing it (fused or
    not, eager or compiled) gives the same bits."""
    mantissa, exponent = math.frexp(a)
    return math.ldexp(round(mantissa * 2**15) / 2**15, exponent)


@functools.lru_cache(maxsize=256)
def _half_level(a: float) -> Tensor:
    return torch.tensor(a / 512, dtype=torch.float32)


def draw_magnitudes(out: Tensor, bound: float, seed, step=0, scratch: Tensor | None = None) -> Tensor:
    """Fill ``out`` with draw ``step`` of ``seed``: (k + ½)·a/256 for the bytes k of
    :func:`counter_bytes`, a = :func:`magnitude_bound` (``bound``), exact in fp32, then cast to
    ``out``'s dtype. ``seed`` and ``step`` are Python ints (or int64 tensors: the same draw; or
    ``seed`` a ``torch.Generator``, which then draws the seed); ``scratch`` a contiguous tensor,
    not ``out``, whose memory the draw may use (brsf passes B's buffer, written next); ``out``
    is returned."""
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**62, (), generator=seed))
    a, n = magnitude_bound(bound), out.numel()
    if (isinstance(seed, int) and out.device.type == "cpu" and out.dtype == torch.float32 and out.is_contiguous()
            and (n + 3) // 4 <= _NUMPY_WORDS and not torch.compiler.is_compiling()):
        # a small CPU draw, all in numpy: the same words, levels and (exact) fp32 products
        levels = _numpy_uint32((n + 3) // 4, *draw_key(seed, step)).view(np.uint8)[:n]
        r = out.detach().numpy().reshape(-1)
        np.multiply(levels, np.float32(a / 256), out=r, dtype=np.float32)
        r += np.float32(a / 512)
        return out
    levels = counter_bytes(n, seed, step, out.device, scratch).view(out.shape)
    if out.dtype == torch.float32 and out.is_contiguous() and not torch.compiler.is_compiling():
        # a/512 + k·a/256 in two passes; a/512 as a CPU scalar tensor (no copy to the device)
        return torch.add(_half_level(a), out.copy_(levels), alpha=a / 256, out=out)
    return out.copy_(levels.to(torch.float32) * (a / 256) + a / 512)


def redraw_if_moved(R: Tensor, step: Tensor, drawn_for: Tensor, seed: Tensor, weight: Tensor, bound: float,
                    scratch: Tensor | None = None) -> None:
    """brsf's update of its buffers for ``weight``: when W's fingerprint differs from
    ``drawn_for``, draw number ``step`` into ``R``, advance ``step`` and record the fingerprint;
    otherwise nothing. ``scratch``: memory the draw may use (eager mode: B's buffer)."""
    stamp = fingerprint(weight)
    if not torch.equal(stamp, drawn_for):
        draw_magnitudes(R, bound, int(seed), int(step), scratch)
        step.add_(1)
        drawn_for.copy_(stamp)


@torch.library.custom_op("alignlab::brsf_redraw", mutates_args=("R", "step", "drawn_for"))
def _redraw_op(R: Tensor, step: Tensor, drawn_for: Tensor, seed: Tensor, weight: Tensor, bound: float) -> None:
    """:func:`redraw_if_moved` as an operator torch.compile keeps opaque: a compiled graph takes
    eager mode's branch on W's bits, with the same numbers, and no graph break."""
    redraw_if_moved(R, step, drawn_for, seed, weight, bound)


@_redraw_op.register_fake
def _(R, step, drawn_for, seed, weight, bound):
    return None


class ResampledSignFeedback(SignFeedback):
    def __init__(self, weight: Tensor, init: str, seed: int, constrain_weights: bool = False) -> None:
        super().__init__(weight if constrain_weights else None)
        self.init = init
        self.bound = magnitude_bound(init_bound(weight, init))  # a of |R| ~ U(0, a)
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        R = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        self.register_buffer("R", self._next_draw(R))
        self.register_buffer("drawn_for", fingerprint(weight))

    @property
    def weight_shape(self) -> torch.Size:
        return self.R.shape

    def resize(self, weight: Tensor) -> None:
        """R is redrawn for the new shape (it is redrawn every step anyway)."""
        self.bound = magnitude_bound(init_bound(weight, self.init))
        self.R = self._next_draw(torch.empty(weight.shape, dtype=self.R.dtype, device=self.R.device))
        self.drawn_for = fingerprint(weight)
        resize_norm(self, weight)

    def _next_draw(self, out: Tensor) -> Tensor:
        """The next draw into ``out`` (eager); advances ``step``."""
        draw_magnitudes(out, self.bound, int(self.seed), int(self.step))
        self.step += 1
        return out

    def _build(self, w: Tensor) -> Tensor:
        """Eager mode, W moved: R first (drawn in B's kept buffer, if W's bits changed), then B."""
        out = self._kept(w)
        R = self.magnitudes(w, scratch=out)
        torch.sign(w, out=out)
        return out.mul_(R)

    def magnitudes(self, weight: Tensor, scratch: Tensor | None = None) -> Tensor:
        """|R| for this W, redrawn first if W's bits changed since the last draw; ``scratch``:
        memory the draw may use (eager mode)."""
        if torch.compiler.is_compiling():
            _redraw_op(self.R, self.step, self.drawn_for, self.seed, weight.detach(), self.bound)
        else:
            redraw_if_moved(self.R, self.step, self.drawn_for, self.seed, weight, self.bound, scratch)
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
