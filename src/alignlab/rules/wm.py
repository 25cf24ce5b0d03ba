"""Weight mirrors, WM (Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, "Deep learning
without weight transport", NeurIPS; arXiv 1904.05391).

Errors travel back through a learned B (shaped like W: grad_x = δ·B, as in fa). In *mirror
mode* the layer's inputs are driven by noise ξ ~ N(0, σ²I), its output is its own forward
response y = Wξ, and B learns from the Hebbian product of the two, with decay (the mirror rule,
"equation 7 of the paper manuscript" in the authors' code, plus the decay λ_WM):

    ΔB = η_WM ⟨y ξᵀ⟩ − λ_WM B,   ⟨·⟩ the mean over ``mirror_batch`` noise samples

E[y ξᵀ] = σ²W, so B → (η_WM σ²/λ_WM) W at rate λ_WM per step (= W at the defaults). The step
sees only ξ and the layer's response y, never W itself.

Wiring: one mirror step per change of W (per optimizer step), taken by the first ``matrix()``
call that meets the new W (a training or diagnostics forward pass; either gives the same step),
before it returns B, which it updates in place. The noise comes from a generator seeded by the
buffers ``seed`` and ``step``, and an exact fingerprint of W's bits (``noise_drawn_for``, as in
brsf) marks the W last mirrored, so DDP ranks and resumed runs take identical steps and passes
on an unchanged W (gradient accumulation) take none. Under ``torch.compile`` (``fullgraph=True``
too) the test and the step are one operator the graph keeps opaque (``alignlab::wm_mirror``,
mutating B, ``step`` and ``noise_drawn_for``): a compiled pass steps exactly when eager mode
would, with the same numbers. Convs: the kernel is a matrix (C_out, C_in/groups·k…) and ξ a
batch of input patches, drawn independently for each group. The step runs in fp32 with
autocast off; B keeps its dtype.

Options
-------
init : B's start, as for fa (``"kaiming"`` default, ``"xavier"``).
mirror_lr : η_WM (default 0.05).
mirror_decay : λ_WM, in [0, 1] (default 0.05).
noise_std : σ (default 1.0).
mirror_batch : noise samples per step (default 64). For a fixed W, B's angle to W settles at
    atan √(λ_WM·fan_in / ((2 − λ_WM)·mirror_batch)): 6.5° at fan_in 32, 24° at 512; raise it
    with fan_in.

Sources, choices and measurements: docs/rules.md#wm
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import INITS, STEP_MIX, Feedback, Rule, check_choice, fingerprint, grown, new_seed, random_like, weight_key
from .registry import register


def mirror_update(B: Tensor, weight: Tensor, noise: Tensor, lr: float, decay: float) -> Tensor:
    """The new B after one mirror step: (1 − λ)B + η ⟨y ξᵀ⟩, y = ξ Wᵀ per group.

    ``noise`` is ξ, (groups, n, fan_in/groups); ``weight`` W, (C_out, C_in/groups, *k) or
    (out, in). Computed in fp32 without autocast; returned in B's dtype.
    """
    g, n, d = noise.shape
    with torch.autocast(noise.device.type, enabled=False):
        w = weight.detach().float().reshape(g, -1, d)  # (groups, out/groups, d)
        y = noise @ w.mT  # the layer's response to the noise: (groups, n, out/groups)
        hebb = (y.mT @ noise) / n  # ⟨y ξᵀ⟩
        new = B.detach().float() * (1 - decay) + lr * hebb.reshape(B.shape)
    return new.to(B.dtype)


def mirror_noise(shape: tuple[int, int, int], std: float, seed: int, step: int, device) -> Tensor:
    """ξ of mirror step ``step``: ``shape`` = (groups, mirror_batch, fan_in/groups), N(0, std²),
    drawn on ``device`` from a generator seeded by (seed + step·MIX) mod 2⁶³."""
    gen = torch.Generator(device=device).manual_seed((seed + step * STEP_MIX) % 2**63)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).mul_(std)


def mirror_if_moved(B: Tensor, step: Tensor, noise_drawn_for: Tensor, seed: Tensor, weight: Tensor, groups: int,
                    mirror_batch: int, mirror_lr: float, mirror_decay: float, noise_std: float) -> None:
    """wm's update of its buffers for ``weight``: when W's fingerprint differs from
    ``noise_drawn_for``, mirror step number ``step`` on B (in place), then advance ``step`` and
    record the fingerprint; otherwise nothing."""
    stamp = fingerprint(weight)
    if torch.equal(stamp, noise_drawn_for):
        return
    with torch.no_grad():
        xi = mirror_noise((groups, mirror_batch, math.prod(B.shape[1:])), noise_std, int(seed), int(step), B.device)
        B.copy_(mirror_update(B, weight, xi, mirror_lr, mirror_decay))
        step.add_(1)
        noise_drawn_for.copy_(stamp)


@torch.library.custom_op("alignlab::wm_mirror", mutates_args=("B", "step", "noise_drawn_for"))
def _mirror_op(B: Tensor, step: Tensor, noise_drawn_for: Tensor, seed: Tensor, weight: Tensor, groups: int,
               mirror_batch: int, mirror_lr: float, mirror_decay: float, noise_std: float) -> None:
    """:func:`mirror_if_moved` as an operator torch.compile keeps opaque: a compiled graph takes
    eager mode's branch on W's bits, with the same numbers, and no graph break."""
    mirror_if_moved(B, step, noise_drawn_for, seed, weight, groups, mirror_batch, mirror_lr, mirror_decay, noise_std)


@_mirror_op.register_fake
def _(B, step, noise_drawn_for, seed, weight, groups, mirror_batch, mirror_lr, mirror_decay, noise_std):
    return None


class MirrorFeedback(Feedback):
    """B as a buffer, moved by one mirror step each time W changes."""

    def __init__(self, B: Tensor, weight: Tensor, groups: int, seed: int, *, init: str, mirror_lr: float,
                 mirror_decay: float, noise_std: float, mirror_batch: int) -> None:
        super().__init__()
        self.register_buffer("B", B)
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("noise_drawn_for", fingerprint(weight))  # W the last step was taken for
        self._seen = None  # the (storage, version) of W last checked against noise_drawn_for
        self.groups, self.init = groups, init
        self.mirror_lr, self.mirror_decay = mirror_lr, mirror_decay
        self.noise_std, self.mirror_batch = noise_std, mirror_batch

    @property
    def weight_shape(self) -> torch.Size:
        return self.B.shape

    def resize(self, weight: Tensor) -> None:
        """Existing entries kept, new ones drawn as at conversion; the next ``matrix`` call
        takes a mirror step for the new W."""
        self.B = grown(self.B, random_like(weight, self.init))

    def noise(self, step: int) -> Tensor:
        """ξ of mirror step ``step``: (groups, mirror_batch, fan_in/groups), N(0, σ²), drawn on
        B's device from a generator seeded by (seed, step) (:func:`mirror_noise`)."""
        shape = (self.groups, self.mirror_batch, math.prod(self.B.shape[1:]))
        return mirror_noise(shape, self.noise_std, int(self.seed), step, self.B.device)

    def mirror(self, weight: Tensor) -> None:
        """One mirror step on W (in mirror mode the layer only computes y = Wξ)."""
        with torch.no_grad():
            self.B.copy_(mirror_update(self.B, weight, self.noise(int(self.step)), self.mirror_lr, self.mirror_decay))
            self.step += 1
            self.noise_drawn_for.copy_(fingerprint(weight))

    def matrix(self, weight: Tensor) -> Tensor:
        options = (self.groups, self.mirror_batch, self.mirror_lr, self.mirror_decay, self.noise_std)
        if torch.compiler.is_compiling():
            _mirror_op(self.B, self.step, self.noise_drawn_for, self.seed, weight.detach(), *options)
            return self.B
        key = weight_key(weight)  # cheap: only a W whose storage or version moved is fingerprinted
        if key != self._seen:
            mirror_if_moved(self.B, self.step, self.noise_drawn_for, self.seed, weight, *options)
            self._seen = weight_key(weight)
        return self.B

    def extra_repr(self) -> str:
        return (f"B={tuple(self.B.shape)} (mirrored), step={int(self.step)}, mirror_lr={self.mirror_lr}, "
                f"mirror_decay={self.mirror_decay}, noise_std={self.noise_std}, mirror_batch={self.mirror_batch}")


def _check_number(option: str, value, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += "" if high == math.inf else f" and <= {high}"
        raise ValueError(f"rule 'wm': {option}={value!r} is not valid; give a finite number {bound}")


@register
@dataclass
class WM(Rule):
    """Weight mirrors: B learns W's direction from the layer's response to noise."""

    name = "wm"
    init: str = "kaiming"  # B's start: "kaiming" U(±1/√fan_in) | "xavier", as for fa
    mirror_lr: float = 0.05  # η_WM, the Hebbian step
    mirror_decay: float = 0.05  # λ_WM, B's decay per mirror step; B → (η σ²/λ) W
    noise_std: float = 1.0  # σ of the noise ξ ~ N(0, σ²I) that drives the layer's input
    mirror_batch: int = 64  # noise samples per mirror step

    def __post_init__(self) -> None:
        check_choice(self.name, "init", self.init, INITS)
        _check_number("mirror_lr", self.mirror_lr, 0)
        _check_number("mirror_decay", self.mirror_decay, 0, 1)
        _check_number("noise_std", self.noise_std, 0, low_open=True)
        batch = self.mirror_batch
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"rule 'wm': mirror_batch={batch!r} is not valid; give a positive integer")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        return MirrorFeedback(random_like(weight, self.init), weight, groups, new_seed(), init=self.init,
                              mirror_lr=float(self.mirror_lr), mirror_decay=float(self.mirror_decay),
                              noise_std=float(self.noise_std), mirror_batch=self.mirror_batch)
