"""Low-dimensional adaptive feedback, LDFA (Hanut & Kadmon, "Training large neural networks
with low-dimensional error feedback", arXiv 2502.20580; first submitted to ICLR 2025 as
"Restricted Adaptive Feedback", RAF).

Each layer's feedback passes through a rank-r bottleneck: P (r × N_out) compresses the error
at the layer's output to r numbers, Q (r × N_in) expands them into the layer's input space:

    B = Pᵀ Q (shaped like W),   δ_in = Qᵀ (P δ_out)   (the input gradient is ``grad_out @ B``)

Q learns by a projected Kolen-Pollack rule: its gradient is P ΔW (ΔW = Σ δ_out xᵀ, W's own
gradient) and it gets W's weight decay, so B → PᵀP W (P = I: exactly kp):

    W ← λW − ηΔW,   Q ← λQ − η P ΔW,   so  P W − Q ← λ (P W − Q)

P learns by Oja's subspace rule on the layer's output error (y = P δ̂ per sample, δ̂ = δ_out
scaled as ``normalize`` says, ⟨·⟩ the batch mean): its rows become an orthonormal basis of
Ĉ's top-r eigenspace, the principal subspace of the errors this layer sends back:

    ΔP = η_P ⟨y δ̂ᵀ − y yᵀ P⟩ = η_P (P Ĉ − P Ĉ Pᵀ P),   Ĉ = ⟨δ̂ δ̂ᵀ⟩

Wiring: ``matrix()`` returns PᵀQ from an autograd function that gives Q the gradient P ΔW and
P the Oja term (scaled by −η_P/η), computed by ``observe`` from the δ_out the layer's backward
shows it, on ``.backward()`` passes that reach P (not ``torch.autograd.grad`` for other tensors,
nor :func:`alignlab.nn.exact`). Build the optimizer after ``convert`` with Q in W's parameter
group, as for kp. Every position (a Linear's leading dims, a conv's output) is a sample; for
convs P is a 1×1 conv and Q a kernel (r, C_in/groups, *k), used group-wise like W. The backward
uses the dense PᵀQ (no compute saved); cross-attention (separate q/k/v inputs) raises.

Options
-------
rank : r (default 10); each layer uses min(rank, N_out) (C_out for convs); ``"full"`` = N_out.
learn_p : True (default) learns P by Oja's rule; False keeps P at its initial value.
learn_q : True (default) learns Q by the KP-type rule; False keeps Q at P B₀. Both False: fixed
    random rank-r feedback B = PᵀP B₀. ``rank="full", p_init="identity", learn_p=False`` is kp.
p_init : ``"orthogonal"`` (default) random orthonormal rows; ``"identity"`` the first r rows of I.
oja_rate : η_P/η, P's Oja step relative to the optimizer's learning rate (default 1.0); it only
    scales P's gradient, which Adam-type optimizers all but ignore (give ``feedback.P`` its own
    parameter group there).
normalize : δ before Oja's rule: ``"batch"`` (default) centred over the batch and divided by its
    largest per-unit standard deviation (Ĉ's largest diagonal entry is 1); ``"none"``: δ as is.
init : B₀'s distribution, as for fa/kp (``"kaiming"`` default, ``"xavier"``); Q starts at P B₀.

Sources, choices and measurements: docs/rules.md#ldfa
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd import Function

from .base import INITS, Feedback, Rule, check_choice, grown, random_like, resized_warning
from .registry import register

P_INITS = ("orthogonal", "identity")
NORMALIZE = ("batch", "none")


class _LowRankFeedback(Function):
    """B = PᵀQ (shaped like W); Q's gradient P·∇B, P's the Oja term ``observe`` left here."""

    @staticmethod
    def forward(ctx, P, Q, shape):
        ctx.save_for_backward(P)
        ctx.oja = None  # filled by LowRankFeedback.observe during the layer's backward
        with torch.autocast(P.device.type, enabled=False):  # B in P's dtype, as kp's B
            return (P.mT @ Q.flatten(1)).view(shape)

    @staticmethod
    def backward(ctx, grad):
        (P,) = ctx.saved_tensors
        grad_q = None
        if ctx.needs_input_grad[1]:
            grad_q = (P @ grad.flatten(1).to(P.dtype)).view(-1, *grad.shape[1:])
        grad_p = ctx.oja if ctx.needs_input_grad[0] else None
        ctx.oja = None
        return grad_p, grad_q, None


_EAGER = []


def _eager_low_rank():
    """``_LowRankFeedback.apply`` kept out of torch.compile graphs (eager, so that B's autograd
    node is the one ``observe`` fills in); wrapped on first use, because ``torch.compiler``
    imports torch._dynamo, which would add about 1.5 s to ``import alignlab``."""
    if not _EAGER:
        _EAGER.append(torch.compiler.disable(_LowRankFeedback.apply))
    return _EAGER[0]


class LowRankFeedback(Feedback):
    """P (r × N_out) and Q (r × N_in, or a conv kernel): feedback B = PᵀQ, both learned."""

    def __init__(self, P: Tensor, Q: Tensor, *, learn_p: bool = True, learn_q: bool = True,
                 oja_rate: float = 1.0, normalize: str = "batch", init: str = "kaiming") -> None:
        super().__init__()
        self.P = nn.Parameter(P, requires_grad=learn_p)
        self.Q = nn.Parameter(Q, requires_grad=learn_q)
        self.oja_rate = oja_rate
        self.normalize = normalize
        self.init = init

    @property
    def weight_shape(self) -> torch.Size:
        return torch.Size((self.P.shape[1], *self.Q.shape[1:]))

    def resize(self, weight: Tensor) -> None:
        """P gets zero columns for new outputs (its rows stay orthonormal; Oja's rule moves
        them from there), Q new columns P·B₀ for new inputs, B₀ drawn as at conversion."""
        old, r = self.weight_shape, self.P.shape[0]
        P = grown(self.P.detach(), torch.zeros(r, weight.shape[0], dtype=self.P.dtype, device=self.P.device))
        fresh = (P @ random_like(weight, self.init).flatten(1).to(P)).view(r, *weight.shape[1:])
        self.P = nn.Parameter(P, requires_grad=self.P.requires_grad)
        self.Q = nn.Parameter(grown(self.Q.detach(), fresh), requires_grad=self.Q.requires_grad)
        resized_warning(self, old, self.weight_shape)

    def matrix(self, weight: Tensor) -> Tensor:
        return _eager_low_rank()(self.P, self.Q, weight.shape)

    def oja_step(self, delta: Tensor) -> Tensor:
        """⟨y δ̂ᵀ − y yᵀ P⟩ = PĈ − PĈPᵀP for errors ``delta`` (n × N_out), y = P δ̂."""
        P = self.P.detach()
        d = delta.detach().to(P.dtype)
        if self.normalize == "batch":
            d = d - d.mean(0)
            d = d / d.std(0, correction=0).max().clamp_min(torch.finfo(d.dtype).tiny)
        y = d @ P.mT  # n × r
        return (y.mT @ d - (y.mT @ y) @ P) / d.shape[0]

    def observe(self, grad: Tensor, matrix: Tensor) -> None:
        """The layer's backward shows δ_out; leave −η_P/η·(Oja step) for P's gradient."""
        if not self.P.requires_grad:
            return
        node = matrix.grad_fn
        if not hasattr(node, "oja"):  # a slice of B (cross-attention), not B itself
            raise RuntimeError(
                "ldfa: P learns from the error of the whole layer output, but this call used a "
                "slice of B; attention with separate query/key/value inputs is not supported"
            )
        conv = self.Q.dim() > 2
        delta = (grad.movedim(1, -1) if conv else grad).reshape(-1, grad.shape[1 if conv else -1])
        step = -self.oja_rate * self.oja_step(delta)
        node.oja = step if node.oja is None else node.oja + step

    def extra_repr(self) -> str:
        p, q = ("learned" if t.requires_grad else "fixed" for t in (self.P, self.Q))
        return f"rank={self.P.shape[0]}, P={tuple(self.P.shape)} ({p}), Q={tuple(self.Q.shape)} ({q})"


def _rank_of(rank, n_out: int) -> int:
    return n_out if rank == "full" else min(rank, n_out)


@register
@dataclass
class LDFA(Rule):
    """Low-dimensional adaptive feedback: B = PᵀQ, P by Oja's rule on δ, Q by projected KP."""

    name = "ldfa"
    exact_options = {"rank": "full", "p_init": "identity"}  # B = PᵀQ = Q
    rank: int | str = 10  # r; each layer uses min(r, N_out); "full" = N_out
    learn_p: bool = True  # False: P fixed at its initial value
    learn_q: bool = True  # False: Q fixed too; with learn_p=False, fixed random rank-r feedback
    p_init: str = "orthogonal"  # "orthogonal" random orthonormal rows | "identity" rows of I
    oja_rate: float = 1.0  # η_P / η: scale of P's Oja gradient
    normalize: str = "batch"  # δ before Oja: "batch" centred, ÷ largest per-unit std | "none"
    init: str = "kaiming"  # B₀ as for fa/kp; Q = P B₀

    def __post_init__(self) -> None:
        valid_rank = self.rank == "full" or (
            isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1)
        if not valid_rank:
            raise ValueError(f"rule 'ldfa': rank={self.rank!r} is not valid; give a positive integer or 'full'")
        check_choice(self.name, "learn_p", self.learn_p, (True, False))
        check_choice(self.name, "learn_q", self.learn_q, (True, False))
        check_choice(self.name, "p_init", self.p_init, P_INITS)
        check_choice(self.name, "normalize", self.normalize, NORMALIZE)
        check_choice(self.name, "init", self.init, INITS)
        rate = self.oja_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0 or rate == float("inf"):
            raise ValueError(f"rule 'ldfa': oja_rate={rate!r} is not valid; give a finite number >= 0")

    @property
    def data_parallel_exact(self) -> bool:
        """P's Oja step on batch-normalised errors uses each shard's own statistics."""
        return not (self.learn_p and self.normalize == "batch")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        B0 = random_like(weight, self.init)  # first, as kp draws B: same seed, same B at P = I
        n_out = weight.shape[0]
        r = _rank_of(self.rank, n_out)
        if self.p_init == "identity":
            P = torch.eye(n_out, dtype=torch.float32)[:r]
        else:
            P = torch.linalg.qr(torch.randn(n_out, r, dtype=torch.float32))[0].mT
        P = P.to(device=weight.device, dtype=weight.dtype).contiguous()
        Q = (P @ B0.flatten(1)).view(r, *weight.shape[1:])
        return LowRankFeedback(P, Q, learn_p=self.learn_p, learn_q=self.learn_q, oja_rate=float(self.oja_rate),
                               normalize=self.normalize, init=self.init)
