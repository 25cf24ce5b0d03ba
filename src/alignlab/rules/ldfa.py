"""Low-dimensional adaptive feedback, LDFA (Hanut & Kadmon, "Training large neural networks
with low-dimensional error feedback", arXiv 2502.20580; first submitted to ICLR 2025 as
"Restricted Adaptive Feedback", RAF).

Each layer's feedback passes through a rank-r bottleneck, B = QP: P compresses the error at
the layer's output to r numbers and Q expands them into the layer's input space. Here the
feedback tensor is shaped like W (N_out × N_in), so with P (r × N_out) and Q (r × N_in)

    B = Pᵀ Q,   δ_in = Qᵀ (P δ_out)   (the layer's input gradient is ``grad_out @ B``)

and B has rank ≤ r. Both factors learn, every step:

* **Q — Kolen-Pollack, projected.** Q receives P ΔW as its gradient, ΔW = Σ δ_out xᵀ being
  W's own gradient, and the optimizer gives it W's weight decay:

      W ← λW − ηΔW,   Q ← λQ − η P ΔW     so  P W − Q ← λ (P W − Q)

  and B = PᵀQ → PᵀP W, W projected onto the error subspace that P spans. With P = I this is
  exactly KP (:mod:`alignlab.rules.kp`). This is the paper's Eq. (10) (ΔW_l and ΔQ_l for deep
  networks; one reviewer notes that it *is* Kolen-Pollack at P = I).
* **P — Oja's subspace rule on the layer's output error.** With y = P δ̂ per sample
  (δ̂ = δ_out, normalised as below) and the batch mean ⟨·⟩,

      ΔP = η_P ⟨y δ̂ᵀ − y yᵀ P⟩ = η_P (P Ĉ − P Ĉ Pᵀ P),   Ĉ = ⟨δ̂ δ̂ᵀ⟩,

  so P's rows become an orthonormal basis of Ĉ's top-r eigenspace: the principal subspace of
  the errors this layer must send back (Oja's rule for P is the paper's Eq. (8) in the
  one-hidden-layer case, driven there by the targets; for deep networks the paper applies it
  to δ_{l+1}, the error at the layer's output).

How it is wired here: ``matrix()`` returns PᵀQ from a small autograd function, so the layer's
backward hands it ΔW and it gives Q the gradient P ΔW (any optimizer then applies W's update
and decay: build the optimizer after ``convert``, with Q in W's parameter group, exactly as
for kp). The layer's backward also shows this module the error δ_out (the ``observe`` hook of
:mod:`alignlab.nn.functional`); ``observe`` computes −η_P/η (PĈ − PĈPᵀP) and the same
autograd function returns it as **P's gradient**, so P.grad accumulates like any gradient,
only on ``.backward()`` passes that reach P (never under ``torch.autograd.grad`` for other
tensors, nor under :func:`alignlab.nn.exact`). Linear inputs may have any leading dims and
every conv output position is a sample. For convs P (r × C_out) mixes output channels (a
1×1 conv) and Q is a kernel (r, C_in/groups, *k), so B = PᵀQ is a kernel like W's; with
groups > 1 that kernel is used group-wise like W, and its rank bound holds per group.

Sources and what was chosen
---------------------------
* Read: the abstracts of arXiv 2502.20580 v1 and v4 (the stored arXiv pages; the method
  sections were not readable here); the OpenReview reviews of the ICLR 2025 submission
  (fD8Whiy7ca), which quote the structure B = QP, Oja's rule for P (Eq. 8), the KP-type
  Eq. (10) for W and Q, and the matrix Oja term (Pδ)(Pδ)ᵀP; and the authors' code
  (github.com/maherhanut1/LDFA, ``models/layers/rAFA_linear.py`` and ``rAFA_conv.py``):
  P's gradient −(I − PPᵀ)ĜᵀĜP with Ĝ the batch-centred error scaled by its largest per-unit
  standard deviation, Q's gradient Pᵀ∇W (their P is our Pᵀ), conv P a 1×1 kernel with every
  position a sample, all parameters in one Adam with weight decay. The equation numbers above
  are the ICLR submission's as the reviewers cite them; the exact equations of the arXiv
  versions could not be read and may be numbered differently.
* Chosen here: Ĉ is the batch *mean* (the authors' code sums over the batch; Adam, which they
  use, does not care, but SGD's step would grow with the batch and with conv map size); the
  population standard deviation (theirs is torch's default, unbiased); P starts with
  orthonormal rows (theirs: kaiming-uniform) and Q = P B₀ with B₀ drawn as kp draws B, so that
  at P = I the initial B is kp's. The v4 paper's "normative" subspace rule and its later
  synapse-local variants are not implemented.

Options
-------
rank : r, the feedback's dimension (default 10: the paper's r = d, the task dimension, for a
    10-class task). Each layer uses min(rank, N_out) (C_out for convs); ``"full"`` = N_out.
learn_p : True (default) learns P by Oja's rule; False keeps P at its initial value (the
    paper's fixed-P ablation). With ``rank="full", p_init="identity", learn_p=False`` the rule
    *is* kp: the same B, updates and decay, step for step (tested).
learn_q : True (default) learns Q by the KP-type rule; False keeps Q at P B₀. With
    ``learn_p=False, learn_q=False`` the feedback is a *fixed random rank-r* B = PᵀP B₀ (FA
    through an r-dimensional bottleneck), the paper's control for adaptive low-rank feedback.
p_init : ``"orthogonal"`` (default) random orthonormal rows; ``"identity"`` the first r rows
    of the identity (P = I at full rank).
oja_rate : η_P/η, P's Oja step relative to the optimizer's learning rate (default 1.0). It
    scales P's gradient, so optimizers that normalise the gradient's scale (Adam, AdamW) all
    but ignore it; there, give ``feedback.P`` its own parameter group to change P's rate.
normalize : how δ is scaled before Oja's rule. ``"batch"`` (default, as the authors' code):
    centred over the batch and divided by its largest per-unit standard deviation, so Ĉ's
    largest diagonal entry is 1 whatever the loss's scale; ``"none"``: δ as it is.
init : B₀'s distribution, as for fa/kp (``"kaiming"`` default, ``"xavier"``).

Weight decay is the optimizer's, as for kp; an optimizer with decay on ≥2-D tensors
(:mod:`alignlab.optim`) decays P too, as the authors' Adam does. The backward pass uses the
dense N_out × N_in product PᵀQ, so this implementation saves no backward compute. Cross-
attention (separate query/key/value inputs to a converted ``nn.MultiheadAttention``) raises
in the backward: P's error would be three errors of different lengths.
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
