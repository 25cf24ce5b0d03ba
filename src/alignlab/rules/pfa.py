"""Product Feedback Alignment, PFA (Li Ji-An & Benna 2024, "Deep learning without weight
symmetry", arXiv 2405.20594; the authors' code: github.com/jil095/product_feedback_alignment).

Errors travel back through a *product* of two feedback matrices and an intermediate population
of k·N_out units, so that no feedback synapse mirrors a forward one:

    δ_in = Rᵀ Bᵀ δ_out        B: N_out × k·N_out, fixed;   R: k·N_out × N_in, learned
    ∇R = Bᵀ δ_out xᵀ = Bᵀ ∇W,  R ← R − η (Bᵀ ∇W + λ R)

(row-vector form, as here: grad_x = grad_out · B · R). With weight decay λ on both W and R,
W − B R ← (1 − ηλ)(W − B R) − η (I − B Bᵀ) ∇W, so B R → W whenever B Bᵀ = I, and
approximately when B is random with E[B Bᵀ] = I. The weight update of W is the true local one.

What was confirmed, and where
-----------------------------
Only the abstract and introduction of the paper could be read here, so its equation numbers
are not cited. The details below are read from the authors' code (commit d1d413b):

* the backward pass — ``biotorch/autograd/tfa/linear.py``: grad_R_out = δ·B,
  grad_x = grad_R_out·R, ∇R = grad_R_outᵀ·x (= Bᵀ∇W); B gets no gradient. Convs —
  ``autograd/tfa/conv.py``: R is a conv kernel with the layer's stride/padding/dilation/groups,
  B a 1×1 kernel (N_out, k·N_out, 1, 1) applied as a transposed 1×1 conv;
* the expansion ratio k = 10 (``expand_ratio: 10`` in every ``tfawd`` config: MNIST MLP,
  CIFAR-10 ResNet-20, ImageNet ResNet-18);
* the init (``layers/tfa_constructor/linear.py``, ``conv.py``): R like W (``xavier`` in every
  config), B ``xavier_uniform`` with gain √((1+1/k)/2), i.e. U(±√(3/(k·N_out))), so that
  E[B Bᵀ] = I (the eigenvalues of B Bᵀ ≈ 1, ``plotting/alignment_vs_expand_ratio.py``);
  ``"ortho"``: B = ``orthogonal_`` (orthonormal rows, B Bᵀ = I) and ``"id"``: B = I, both
  with k forced to 1 (the PFA-o runs, ``tfawdo`` configs);
* weight decay: R has no rule of its own: it is a parameter of the model's one SGD optimizer
  (momentum 0.9), so it gets the same L2 decay as W (``benchmark/optimizers.py``; the
  ``tfawd`` runs use a large λ in the first epoch, e.g. 0.03 on MNIST, then multiply it by
  0.003–0.2, ``benchmark/wd_schedulers.py``). That schedule is the training loop's business.
  The code also holds a "bias_backward" that never reaches a gradient; it is left out.

Here
----
B is a buffer and R an ``nn.Parameter``. ``matrix(weight)`` returns the product B·R, shaped
like W and built with autograd once per forward pass; the layer's autograd function gives it
∇W as its gradient, so R receives exactly Bᵀ∇W — the authors' rule — and any optimizer
applies it. Put R in W's parameter group with weight decay (``alignlab.optim`` does: R is a
≥2-D tensor); build the optimizer after ``convert``. Sending δ through B·R is mathematically
the same as sending it through B, then R (tested), and the backward then costs what FA's does.
Two routes, the same numbers (tested):

* *product*: B·R is built at every forward call of the layer under grad (not in eval or
  no_grad), about 2·k·(N_out/groups)·|W| multiply-adds (B·R, then Bᵀ∇W), computed in the
  parameters' dtype, also under autocast. Convs and attention always take it.
* *two-stage*, for a Linear whose call has fewer input rows n (batch × leading dims) than
  N_out: h = δ·B (n × k·N_out), grad_x = h·R, ∇R = hᵀx, about 2·k·|W| multiply-adds per row
  (``linear_factors``; :class:`alignlab.nn.functional.LinearProductFn`).

The product is the cheaper one whenever the rows (batch × output positions) outnumber
N_out/groups (convs, token sequences); a Linear wider than its batch takes the two-stage route.
Either way PFA's backward does about k times the work of FA's input gradient.

Convs: R is a kernel (k·C_out, C_in/groups, *kernel) and B the 1×1 channel mix (C_out,
k·C_out/groups), i.e. a grouped 1×1 kernel: with groups > 1 each group of outputs mixes only
its own k·C_out/groups intermediate channels (the ones R connects to the same input group),
so that B·R is again a grouped kernel shaped like W (a mix across groups is not one). The
authors' code, written for ResNets, never meets groups > 1. The packed attention projection
(3E × E) is treated as one Linear weight.

Options
-------
k : expansion ratio, intermediate units per output unit (default 10, as in the paper).
init_b : ``"random"`` (default) U(±√(3/m)), m = k·C_out/groups the units B mixes, so
    E[B Bᵀ] = I; ``"orthogonal"``: orthonormal rows, B Bᵀ = I exactly (any k; the authors'
    PFA-o runs use k = 1); ``"identity"``: B = I, needs k = 1, so B·R = R.
init_r : how R starts, drawn like a weight of its shape: ``"xavier"`` (default, the authors'
    setting) U(±√(6/(fan_in+fan_out))) or ``"kaiming"`` U(±1/√fan_in), PyTorch's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import INITS, Feedback, Rule, check_choice, grown, random_like, resized_warning
from .registry import register

INIT_B = ("random", "orthogonal", "identity")


def product(B: Tensor, R: Tensor) -> Tensor:
    """B·R shaped like the layer's weight: per group g, B_g (C_out/g × m) times R_g (m × rest).

    B is (C_out, m), R is (groups·m, C_in/groups, *kernel) or (k·N_out, N_in); the number of
    groups is R's rows over B's columns.
    """
    c_out, m = B.shape
    groups = R.shape[0] // m
    out = torch.bmm(B.reshape(groups, c_out // groups, m), R.reshape(groups, m, -1))
    return out.reshape(c_out, *R.shape[1:])


class ProductFeedback(Feedback):
    """B fixed (a buffer), R learned (a parameter); the feedback tensor is B·R."""

    has_factors = True

    def __init__(self, B: Tensor, R: Tensor, init_b: str = "random", init_r: str = "xavier") -> None:
        super().__init__()
        self.register_buffer("B", B)
        self.R = nn.Parameter(R)
        self.init_b, self.init_r = init_b, init_r

    @property
    def weight_shape(self) -> torch.Size:
        return torch.Size((self.B.shape[0], *self.R.shape[1:]))

    def resize(self, weight: Tensor) -> None:
        """More outputs: B grows block-diagonally (the new rows mix k new intermediate units
        each, drawn as at conversion; the old rows keep theirs, so their B·R is unchanged) and
        R gets the new units' rows; other input sizes: R's columns are kept or drawn. Fewer
        outputs or grouped convs raise."""
        (c0, m0), c1 = self.B.shape, weight.shape[0]
        if self.groups != 1 or c1 < c0:
            return super().resize(weight)
        k, old = m0 // c0, self.weight_shape
        B = torch.zeros(c1, k * c1, dtype=self.B.dtype, device=self.B.device)
        B[:c0, :m0] = self.B
        B[c0:, m0:] = draw_b(c1 - c0, 1, k, self.init_b).to(B)
        R_like = torch.empty((k * c1, *weight.shape[1:]), dtype=self.R.dtype, device=self.R.device)
        self.B, self.R = B, nn.Parameter(grown(self.R.detach(), random_like(R_like, self.init_r)))
        resized_warning(self, old, self.weight_shape)

    @property
    def groups(self) -> int:
        return self.R.shape[0] // self.B.shape[1]

    def linear_factors(self, rows: int, weight: Tensor) -> tuple[Tensor, Tensor] | None:
        """(B, R) for the two-stage route when it is the cheaper one: fewer rows than N_out."""
        return (self.B, self.R) if rows < self.B.shape[0] and self.groups == 1 else None

    def matrix(self, weight: Tensor) -> Tensor:
        kind = self.R.device.type
        if torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return product(self.B, self.R)
        return product(self.B, self.R)


def draw_b(c_out: int, groups: int, k: int, init_b: str) -> Tensor:
    """B (C_out, k·C_out/groups), one block per group, drawn on the CPU from torch's RNG."""
    rows, m = c_out // groups, k * (c_out // groups)
    if init_b == "identity":
        return torch.eye(rows).repeat(groups, 1)
    if init_b == "orthogonal":
        return torch.cat([nn.init.orthogonal_(torch.empty(rows, m)) for _ in range(groups)])
    bound = math.sqrt(3 / m)
    return (2 * torch.rand(c_out, m) - 1) * bound


@register
@dataclass
class PFA(Rule):
    """Product Feedback Alignment: feedback B·R, B fixed, R learned by ∇R = Bᵀ∇W."""

    name = "pfa"
    exact_options = {"k": 1, "init_b": "identity"}  # B·R = R
    k: int = 10  # expansion ratio: k·N_out intermediate units
    init_b: str = "random"  # "random" E[BBᵀ]=I | "orthogonal" BBᵀ=I | "identity" (k=1)
    init_r: str = "xavier"  # initial R: "xavier" (authors) | "kaiming"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"rule 'pfa': k={self.k!r} is not valid; give an integer >= 1")
        check_choice(self.name, "init_b", self.init_b, INIT_B)
        check_choice(self.name, "init_r", self.init_r, INITS)
        if self.init_b == "identity" and self.k != 1:
            raise ValueError(f"rule 'pfa': init_b='identity' needs k=1 (B = I); got k={self.k!r}")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        c_out = weight.shape[0]
        R_like = torch.empty((self.k * c_out, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
        R = random_like(R_like, self.init_r)
        B = draw_b(c_out, groups, self.k, self.init_b).to(device=weight.device, dtype=weight.dtype)
        return ProductFeedback(B, R, self.init_b, self.init_r)
