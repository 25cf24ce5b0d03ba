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

Wiring: every Linear and conv call sends δ_out through Pᵀ, then Q (``factors``; the backward of
:mod:`alignlab.nn.product`): h = δPᵀ, δ_in = hQ, ∇Q = hᵀx, where that costs fewer multiply-adds
than forming PᵀQ (then δ_in = δ(PᵀQ), ∇Q = P ΔW: the same numbers). P's gradient, the Oja term
scaled by −η_P/η, comes from δ_out and h in the same backward (``factor_grad``), so gradients
reach P and Q like any parameter's (``.backward()``, ``torch.autograd.grad``, compile with
``fullgraph=True``); under :func:`alignlab.nn.exact` they get none. Build the optimizer after
``convert`` with Q in W's parameter group, as for kp. Every position (a Linear's leading dims, a
conv's output) is a sample; for convs P is a 1×1 channel mix and Q a kernel (r, C_in/groups,
*k), used group-wise like W. Cross-attention (separate q/k/v inputs) raises unless P is fixed.

Direct (``direct=True``; the authors' rADFA layers): the network's output error e (C numbers
per sample) goes straight to every layer through that layer's own P (r × C) and Q (r × D_in):

    δ_in = (e Pᵀ) Q,   ∇Q = (e Pᵀ)ᵀ x,   ΔP: Oja's rule as above on e (not on δ_out)

Q's gradient is what Q would get as the weight of the map x ↦ y = e Pᵀ (KP's principle, the
compressed output error in the place of P δ_out). Shapes as dfa's ``broadcast``: a Linear whose
input has the output's positions gets one error per position, any other layer each sample's e
summed over positions, sent to every input position (then x is summed over positions in ∇Q).
P and Q are parameters; their gradients arrive through autograd (P and Q are inputs of the
layer's autograd function, or under torch.compile of the pass's collector: alignlab.nn.direct),
so any optimizer, weight decay and DDP apply as to W. One h = e Pᵀ per layer call serves the
input gradient, ∇Q and Oja's step.

Options
-------
rank : r (default 10); each layer uses min(rank, N_out) (direct: min(rank, C)); ``"full"`` =
    N_out (direct: C).
learn_p : True (default) learns P by Oja's rule; False keeps P at its initial value.
learn_q : True (default) learns Q by the KP-type rule; False keeps Q at P B₀. Both False: fixed
    random rank-r feedback B = PᵀP B₀. ``rank="full", p_init="identity", learn_p=False`` is kp.
p_init : ``"orthogonal"`` (default) random orthonormal rows; ``"identity"`` the first r rows of I.
oja_rate : η_P/η, P's Oja step relative to the optimizer's learning rate (default 1.0); it only
    scales P's gradient, which Adam-type optimizers all but ignore (give ``feedback.P`` its own
    parameter group there).
normalize : δ (direct: e) before Oja's rule: ``"batch"`` (default) centred over the batch and
    divided by its largest per-unit standard deviation (Ĉ's largest diagonal entry is 1);
    ``"unit"`` centred and each unit divided by its own (rADFA's); ``"none"``: as is.
init : B₀'s distribution, as for fa/kp (``"kaiming"`` default, ``"xavier"``); Q starts at P B₀
    (direct: B₀ is C × D_in, drawn as a weight of that shape).
direct : False (default) feedback through each layer's own output error, as above; True: rADFA.
outputs : direct only: C, the size of the output error's last dim; None (default): the outputs
    of the last layer this convert call gave direct ldfa feedback (a classifier's head).
targets : direct only: True drives Oja's rule for P by the one-hot targets instead of e (the
    authors' ``requires_gt``), read off e as the one negative entry of each sample's row, which
    is the target's under softmax cross-entropy; a row with none or several raises (other losses,
    label smoothing once the model is confident; eagerly only: a compiled backward does not check);
    rows of zeros (ignored positions) are left out.

Sources, choices and measurements: docs/rules.md#ldfa
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn.direct import check_batch, per_position, spread
from .base import INITS, Feedback, Rule, check_choice, grown, new_seed, random_like, resized_warning
from .registry import register

P_INITS = ("orthogonal", "identity")
NORMALIZE = ("batch", "unit", "none")


def normalized(delta: Tensor, normalize: str) -> Tensor:
    """Errors (n × N) as ``normalize`` says: ``"batch"`` centred, ÷ the largest per-unit standard
    deviation; ``"unit"`` centred, each unit ÷ its own (units that never vary stay 0); ``"none"``."""
    if normalize == "none":
        return delta
    d = delta - delta.mean(0)
    std = d.std(0, correction=0)
    if normalize == "batch":
        return d / std.max().clamp_min(torch.finfo(d.dtype).tiny)
    return d / torch.where(std > 0, std, torch.ones_like(std))


def _yyP(y: Tensor, P: Tensor) -> Tensor:
    """yᵀyP in the cheaper order: (yᵀy)P costs n·r² + r²·N, yᵀ(yP) 2·n·r·N (n × r y, r × N P)."""
    (n, r), N = y.shape, P.shape[1]
    return (y.mT @ y) @ P if n * r + r * N <= 2 * n * N else y.mT @ (y @ P)


# tests force one route of oja_step ("moments" or "rows") to compare the two; None: the cheaper one
OJA_ROUTE: str | None = None


ROW_PASS_COST = 64  # multiply-adds that one element of the n × (N + r) rows costs on the row route


def moments_cheaper(n: int, N: int, r: int, normalize: str, have_h: bool = True) -> bool:
    """True when the errors' second moments (an N × N product: n·N² multiply-adds; both routes
    centre the errors) cost less than the row route: its products with h = δPᵀ
    (n·r·(N + r), twice for ``"unit"``; n·r·N more to form h where the backward did not,
    ``have_h`` False) and its passes over the n × (N + r) rows (moving a conv's channels last,
    centring, and the thin products whose sums run over all n rows), ``ROW_PASS_COST``
    multiply-adds per element. That constant fits step times of both routes measured on
    2 CPU cores over conv errors (128, C, H, W), C = 6–256, and Linear errors (128 or 8192
    rows, 64–1024 units) at r = 2–10 (benchmarks/oja_routes.py)."""
    if OJA_ROUTE is not None:
        return OJA_ROUTE == "moments"
    rows = r * (N + r) * (2 if normalize == "unit" else 1) + ROW_PASS_COST * (N + r)
    rows += 0 if have_h or normalize == "unit" else r * N
    return N * N < rows


def error_moments(delta: Tensor, dim: int, centre: bool) -> Tensor:
    """M (N × N): the errors' second moment ⟨δδᵀ⟩ over their n rows, about their mean where
    ``centre`` (the covariance, from the centred errors: no cancellation of a large mean), the
    units along ``dim`` and every other index a row (a conv's positions are rows), without
    moving ``dim`` last: per leading index a (N × rest)·(rest × N) product, summed."""
    dim = dim % delta.dim()
    others = tuple(i for i in range(delta.dim()) if i != dim)
    n = delta.numel() // delta.shape[dim]
    if centre:
        delta = delta - delta.mean(others, keepdim=True)
    if dim == delta.dim() - 1:
        rows = delta.reshape(-1, delta.shape[-1])
        return rows.mT @ rows / n
    blocks = delta.flatten(dim + 1).flatten(0, dim - 1) if dim > 0 else delta.flatten(1).unsqueeze(0)
    return torch.bmm(blocks, blocks.mT).sum(0) / n


def oja_from_moments(P: Tensor, M: Tensor, normalize: str) -> Tensor:
    """The step of :func:`oja_step` from the errors' second moment M (about their mean unless
    ``"none"``): PC − PCPᵀP with C = ⟨δ̂δ̂ᵀ⟩ for the errors δ̂ as ``normalize`` makes them
    (``"none"``: C = M; ``"batch"``: M ÷ its largest diagonal entry; ``"unit"``: M ÷ σσᵀ, σ the
    units' standard deviations, 1 for a unit that never varies, so that its row of C is 0)."""
    C = M
    if normalize == "batch":
        C = M / M.diagonal().max().clamp_min(torch.finfo(M.dtype).tiny)
    elif normalize == "unit":
        std = M.diagonal().sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        C = M / torch.outer(std, std)
    PC = P @ C
    return PC - (PC @ P.mT) @ P


def oja_step(P: Tensor, delta: Tensor, normalize: str, h: Tensor | None = None, scale: float = 1.0,
             dim: int = -1) -> Tensor:
    """``scale``·⟨y δ̂ᵀ − y yᵀ P⟩ = scale·(PĈ − PĈPᵀP) for errors ``delta`` (units along ``dim``,
    every other index a row: n rows of N units), y = P δ̂ (zero for n = 0).

    By the cheaper route (:func:`moments_cheaper`): from the errors' second moments
    (:func:`oja_from_moments`; N close to r, as in a conv with few channels), or from the rows.
    ``h``: δPᵀ (units along ``dim``) where the caller has it (the factored backward), so that the
    row route reuses it for ``"batch"`` and ``"none"``. There δ̂ and y are never formed for
    ``"batch"`` (δ̂ = (δ − μ)/s): with h_c = h − μPᵀ = (δ − μ)Pᵀ the step is
    (h_cᵀδ − h_cᵀh_c P)/(n s²) (h_cᵀμ = 0: h_c sums to 0)."""
    P = P.detach()
    (r, N), n = P.shape, delta.numel() // max(delta.shape[dim], 1)
    if n == 0:
        return torch.zeros_like(P)
    delta = delta.detach().to(P.dtype)
    if moments_cheaper(n, N, r, normalize, h is not None):
        M = error_moments(delta, dim, centre=normalize != "none")
        return oja_from_moments(P, M, normalize).mul_(scale)
    if dim not in (-1, delta.dim() - 1):
        delta = delta.movedim(dim, -1)
        h = None if h is None else h.movedim(dim, -1)
    delta = delta.reshape(-1, N)
    if normalize == "unit":
        d = normalized(delta, normalize)
        y = d @ P.mT
        return (y.mT @ d - _yyP(y, P)).mul_(scale / n)
    h = delta @ P.mT if h is None else h.detach().to(P.dtype).reshape(-1, r)
    if normalize == "none":
        return (h.mT @ delta - _yyP(h, P)).mul_(scale / n)
    mu = delta.mean(0)
    var = torch.linalg.vecdot(delta, delta, dim=0).div_(n).sub_(mu * mu)  # one pass; an error's mean is not ≫ its spread
    s2 = var.max().clamp_min_(torch.finfo(delta.dtype).tiny)  # the largest per-unit variance
    hc = h - mu @ P.mT
    return (hc.mT @ delta - _yyP(hc, P)).mul_(s2.reciprocal().mul_(scale / n))


class LowRankFeedback(Feedback):
    """P (r × N_out) and Q (r × N_in, or a conv kernel): feedback B = PᵀQ, both learned."""

    has_factors = True  # every call sends δ through Pᵀ, then Q (factors)

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

    def factors(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(Pᵀ, Q): every Linear and conv call sends δ through Pᵀ, then Q (alignlab.nn.product
        forms PᵀQ in the backward only where that costs less)."""
        return self.P.mT, self.Q

    def factor_grad(self, error: Tensor, h: Tensor | None, dim: int) -> Tensor | None:
        """Pᵀ's gradient: −η_P/η·(Oja step on the errors δ, units along ``dim``, with h = δPᵀ
        where the backward formed it), transposed."""
        if not self.P.requires_grad:
            return None
        return oja_step(self.P, error, self.normalize, h, -self.oja_rate, dim).mT

    def matrix(self, weight: Tensor) -> Tensor:
        """B = PᵀQ (diagnostics, and Q's route in attention with separate query/key/value
        inputs, where Q gets P·∇B; P cannot learn there: it needs the whole output's errors)."""
        if self.P.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "ldfa: P learns from the error of the whole layer output, but this call used B on its own; "
                "attention with separate query/key/value inputs is not supported (learn_p=False is)")
        with torch.autocast(self.P.device.type, enabled=False):  # B in P's dtype, as kp's B
            return (self.P.detach().mT @ self.Q.flatten(1)).view(weight.shape)

    def extra_repr(self) -> str:
        p, q = ("learned" if t.requires_grad else "fixed" for t in (self.P, self.Q))
        return f"rank={self.P.shape[0]}, P={tuple(self.P.shape)} ({p}), Q={tuple(self.Q.shape)} ({q})"


# --- direct: the output error, compressed by P, straight to every layer (rADFA) -------------


def one_hot_targets(rows: Tensor) -> tuple[Tensor, Tensor]:
    """The one-hot targets of softmax cross-entropy read off its output error (n × C rows), and the
    rows that have one: the target's entry (p_c − 1)/n is each row's one negative entry; rows of
    zeros (ignored positions) have none and are left out of Oja's step. Any other row without
    exactly one negative entry raises (eagerly: a traced backward cannot branch on the values)."""
    negative = rows < 0
    used = (rows != 0).any(1)
    if not torch.compiler.is_compiling() and bool(((negative.sum(1) != 1) & used).any()):
        raise RuntimeError("ldfa: targets=True reads the one-hot targets off the output error as its one negative "
                           "entry per sample (softmax cross-entropy), but this loss gave rows with none or several; "
                           "give targets=False")
    return negative, used


def _oja_on_used_rows(P: Tensor, targets: Tensor, used: Tensor, normalize: str) -> Tensor:
    """:func:`oja_step` on the rows of ``targets`` that ``used`` marks (the others are zero), with
    fixed shapes (no row is removed), so that it traces: means and deviations over the used rows."""
    P = P.detach()
    t = targets.to(P.dtype)
    m = used.to(P.dtype).unsqueeze(1)
    n = m.sum().clamp_min(1)
    d = t
    if normalize != "none":
        d = (t - t.sum(0) / n) * m
        std = (d.square().sum(0) / n).sqrt()
        d = d / (std.max().clamp_min(torch.finfo(d.dtype).tiny) if normalize == "batch"
                 else torch.where(std > 0, std, torch.ones_like(std)))
    y = d @ P.mT
    return (y.mT @ d - _yyP(y, P)) / n


class DirectLowRankFeedback(Feedback):
    """P (r × C) and Q (r × D_in): the input gradient (e Pᵀ) Q from the output error e (rADFA)."""

    direct = True

    def __init__(self, d_in: int, n_out: int, *, conv: bool, rank, outputs: int | None, seed: int, like: Tensor,
                 learn_p: bool = True, learn_q: bool = True, p_init: str = "orthogonal", oja_rate: float = 1.0,
                 normalize: str = "batch", targets: bool = False, init: str = "kaiming") -> None:
        super().__init__()
        self.d_in, self.n_out, self.rank, self.outputs, self.seed = d_in, n_out, rank, outputs, seed
        self.p_init, self.init, self.oja_rate, self.normalize, self.targets = p_init, init, oja_rate, normalize, targets
        self.P = nn.Parameter(torch.empty(0, 0, dtype=like.dtype, device=like.device), requires_grad=learn_p)
        self.Q = nn.Parameter(torch.empty(0, d_in, dtype=like.dtype, device=like.device), requires_grad=learn_q)
        self.conv = conv  # the layer's input is (N, D, *positions)
        self.size(n_out if outputs is None else outputs)

    def size(self, c: int) -> None:
        """P (r × c), r = min(rank, c), and Q = P B₀ with B₀ (c × D_in), drawn from the seed."""
        r = c if self.rank == "full" else min(self.rank, c)
        if self.P.shape == (r, c):
            return
        g = torch.Generator().manual_seed(self.seed)
        if self.p_init == "identity":
            P = torch.eye(c)[:r]
        else:
            P = torch.linalg.qr(torch.randn(c, r, generator=g))[0].mT
        Q = P @ random_like(torch.empty(c, self.d_in), self.init, g)
        like = self.P
        self.P = nn.Parameter(P.to(like).contiguous(), requires_grad=self.P.requires_grad)
        self.Q = nn.Parameter(Q.to(like).contiguous(), requires_grad=self.Q.requires_grad)

    def matrix(self, weight: Tensor) -> None:
        return None

    def _check(self, error_shape, x_shape) -> None:
        check_batch(self, error_shape, x_shape)
        c = error_shape[-1]
        if c != self.P.shape[1]:
            raise RuntimeError(f"{self.rule_name}: layer {self.layer!r} compresses an output error of "
                               f"{self.P.shape[1]} features (the outputs of the last layer converted), but the "
                               f"model's output error has {c}; convert with outputs={c}")

    def direct_params(self) -> tuple[Tensor, Tensor]:
        """P and Q: inputs of the layer's autograd function (or of the pass's collector under
        torch.compile), which gives them their gradients (alignlab.nn.direct)."""
        return self.P, self.Q

    def direct_tensors(self, error_shape, x_shape: torch.Size, conv, like: Tensor) -> tuple:
        """Nothing beyond P and Q (checks the shapes, in the forward on the traced route)."""
        self._check(error_shape, x_shape)
        return ()

    def project(self, error: Tensor, x_shape: torch.Size, conv=None) -> Tensor:
        """The input gradient (e Pᵀ) Q: per position, or ē (summed over positions) to every one."""
        return self.direct_grads(error, None, x_shape, conv, (self.P, self.Q), (), True, (False, False))[0]

    def direct_grads(self, error: Tensor, x: Tensor | None, x_shape: torch.Size, conv, params, tensors,
                     need_x: bool, needs) -> tuple[Tensor | None, tuple]:
        """The input gradient (e Pᵀ) Q, P's gradient −η_P/η·(Oja step on e or the targets) and Q's
        gradient (e Pᵀ)ᵀ x, from one h = e Pᵀ (per position, or summed over positions: then x is
        summed over positions in Q's gradient)."""
        self._check(error.shape, x_shape)
        (P, Q), (need_p, need_q) = params, needs
        P = P.detach()
        n, c, r = error.shape[0], error.shape[-1], P.shape[0]
        rows = error.detach().reshape(-1, c)
        per = per_position(error.shape, x_shape, conv)
        h_rows = rows.to(P.dtype) @ P.mT  # every position's compressed error
        h = h_rows if per else h_rows.view(n, -1, r).sum(1)  # (n·positions, r) or (n, r)
        grad_x = grad_p = grad_q = None
        if need_x:
            g = h.to(error.dtype) @ Q.detach().to(error.dtype)
            grad_x = g.view(x_shape) if per else spread(g, x_shape, conv)
        if need_p:
            step = (_oja_on_used_rows(P, *one_hot_targets(rows), self.normalize) if self.targets
                    else oja_step(P, rows, self.normalize, h_rows))
            grad_p = -self.oja_rate * step
        if need_q:
            x = x.detach().to(P.dtype)
            if not per:
                positions = tuple(range(2, x.dim())) if conv is not None else tuple(range(1, x.dim() - 1))
                x = x.sum(positions) if positions else x
            grad_q = h.mT @ x.reshape(h.shape[0], -1)
        return grad_x, (grad_p, grad_q)

    def extra_repr(self) -> str:
        p, q = ("learned" if t.requires_grad else "fixed" for t in (self.P, self.Q))
        return (f"direct, rank={self.P.shape[0]}, P={tuple(self.P.shape)} ({p}), Q={tuple(self.Q.shape)} ({q})"
                + (", P from targets" if self.targets else ""))


def _rank_of(rank, n_out: int) -> int:
    return n_out if rank == "full" else min(rank, n_out)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@register
@dataclass
class LDFA(Rule):
    """Low-dimensional adaptive feedback: B = PᵀQ, P by Oja's rule on δ, Q by projected KP."""

    name = "ldfa"
    exact_options = {"rank": "full", "p_init": "identity"}  # B = PᵀQ = Q
    rank: int | str = 10  # r; each layer uses min(r, N_out) (direct: min(r, C)); "full" = N_out (C)
    learn_p: bool = True  # False: P fixed at its initial value
    learn_q: bool = True  # False: Q fixed too; with learn_p=False, fixed random rank-r feedback
    p_init: str = "orthogonal"  # "orthogonal" random orthonormal rows | "identity" rows of I
    oja_rate: float = 1.0  # η_P / η: scale of P's Oja gradient
    normalize: str = "batch"  # δ before Oja: "batch" centred, ÷ largest per-unit std | "unit" ÷ each unit's | "none"
    init: str = "kaiming"  # B₀ as for fa/kp; Q = P B₀
    direct: bool = False  # True: e P_lᵀ Q_l to every layer l (rADFA), P_l by Oja on e, ∇Q_l = (e P_lᵀ)ᵀ x_l
    outputs: int | None = None  # direct: C, e's size; None: outputs of the last layer converted
    targets: bool = False  # direct: P by Oja on the one-hot targets (read off e; softmax cross-entropy)

    def __post_init__(self) -> None:
        if not (self.rank == "full" or _positive_int(self.rank)):
            raise ValueError(f"rule 'ldfa': rank={self.rank!r} is not valid; give a positive integer or 'full'")
        for option in ("learn_p", "learn_q", "direct", "targets"):
            check_choice(self.name, option, getattr(self, option), (True, False))
        check_choice(self.name, "p_init", self.p_init, P_INITS)
        check_choice(self.name, "normalize", self.normalize, NORMALIZE)
        check_choice(self.name, "init", self.init, INITS)
        rate = self.oja_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0 or rate == float("inf"):
            raise ValueError(f"rule 'ldfa': oja_rate={rate!r} is not valid; give a finite number >= 0")
        if not (self.outputs is None or _positive_int(self.outputs)):
            raise ValueError(f"rule 'ldfa': outputs={self.outputs!r} is not valid; give a positive integer or None")
        extra = [f"{k}={getattr(self, k)!r}" for k, unset in (("outputs", None), ("targets", False))
                 if getattr(self, k) != unset]
        if extra and not self.direct:
            raise ValueError(f"rule 'ldfa': {', '.join(extra)} applies to direct feedback only; give direct=True")
        if self.targets and not self.learn_p:
            raise ValueError("rule 'ldfa': targets=True drives P's learning, but learn_p=False keeps P fixed")

    @property
    def data_parallel_exact(self) -> bool:
        """P's Oja step is quadratic in the errors, whose scale (a mean loss's 1/n) and batch
        statistics are each shard's own; Q's gradient, like W's, averages exactly."""
        return not self.learn_p

    def converted(self, feedbacks: list[Feedback]) -> None:
        """Direct: every layer's P compresses an error of the last converted layer's outputs
        (unless ``outputs`` says otherwise)."""
        direct = [f for f in feedbacks if isinstance(f, DirectLowRankFeedback)]
        if direct and self.outputs is None:
            for feedback in direct:
                feedback.size(direct[-1].n_out)

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        if self.direct:
            return DirectLowRankFeedback(
                weight.shape[1] * groups, weight.shape[0], conv=weight.dim() > 2, rank=self.rank, outputs=self.outputs, seed=new_seed(),
                like=weight, learn_p=self.learn_p, learn_q=self.learn_q, p_init=self.p_init,
                oja_rate=float(self.oja_rate), normalize=self.normalize, targets=self.targets, init=self.init)
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
