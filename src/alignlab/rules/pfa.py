"""Product Feedback Alignment, PFA (Li Ji-An & Benna 2024, "Deep learning without weight
symmetry", arXiv 2405.20594; the authors' code: github.com/jil095/product_feedback_alignment).

Errors travel back through a *product* of two feedback matrices and an intermediate population
of k·N_out units, so that no feedback synapse mirrors a forward one:

    δ_in = Rᵀ Bᵀ δ_out        B: N_out × k·N_out, fixed;   R: k·N_out × N_in, learned
    ∇R = Bᵀ δ_out xᵀ = Bᵀ ∇W,  R ← R − η (Bᵀ ∇W + λ R)

(row-vector form, as here: grad_x = grad_out · B · R). With weight decay λ on both W and R,
W − B R ← (1 − ηλ)(W − B R) − η (I − B Bᵀ) ∇W, so B R → W whenever B Bᵀ = I, and
approximately when B is random with E[B Bᵀ] = I. The weight update of W is the true local one.

Wiring: B is a buffer and R an ``nn.Parameter`` that receives exactly Bᵀ∇W as its gradient. Put
R in W's parameter group with weight decay (:mod:`alignlab.optim` does: R is a ≥2-D tensor) and
build the optimizer after ``convert``. Each backward sends the error through B, then R, or
through B·R formed there, whichever costs fewer multiply-adds for the call's shapes
(:mod:`alignlab.nn.product`; factored for a Linear with fewer error rows than about N_out): the
same numbers either way, about k times FA's input-gradient work. Attention with separate
query/key/value inputs uses B·R, built once per forward pass. Convs: R is a kernel (k·C_out, C_in/groups, *kernel), B a grouped 1×1
channel mix (C_out, k·C_out/groups), so B·R is a kernel shaped like W. The packed attention
projection (3E × E) is one Linear weight.

Options
-------
k : expansion ratio, intermediate units per output unit (default 10, as in the paper).
init_b : ``"random"`` (default) U(±√(3/m)), m = k·C_out/groups the units B mixes, so
    E[B Bᵀ] = I; ``"orthogonal"``: orthonormal rows, B Bᵀ = I exactly (any k);
    ``"identity"``: B = I, needs k = 1, so B·R = R.
init_r : how R starts, drawn like a weight of its shape: ``"xavier"`` (default, the authors'
    setting) U(±√(6/(fan_in+fan_out))) or ``"kaiming"`` U(±1/√fan_in), PyTorch's default.
b_conn_density : the fraction d in (0, 1] of feedback connections that exist (default 1.0:
    dense). As in the authors' code, each entry of B and, independently, of R is kept with
    probability d (one Bernoulli mask per tensor, entry by entry, drawn at conversion); B's
    kept entries are drawn from U(±√(3/(d·m))), so that E[B Bᵀ] = I still holds, R's as
    ``init_r`` says. The masks are fixed: R's zeroed entries get no gradient and stay zero.
    Needs ``init_b="random"`` (a sparse B is neither I nor orthonormal).

Sources, choices and measurements: docs/rules.md#pfa
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn.product import product
from .base import INITS, Feedback, Rule, check_choice, grown, random_like, resized_warning
from .registry import register

INIT_B = ("random", "orthogonal", "identity")


class ProductFeedback(Feedback):
    """B fixed (a buffer), R learned (a parameter); the feedback tensor is B·R."""

    has_factors = True

    def __init__(self, B: Tensor, R: Tensor, init_b: str = "random", init_r: str = "xavier",
                 density: float = 1.0, R_mask: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("B", B)
        self.R = nn.Parameter(R)
        # sparse feedback (b_conn_density < 1): R's fixed connection mask; B's zeros are in B
        self.register_buffer("R_mask", R_mask)
        self.init_b, self.init_r, self.density = init_b, init_r, density

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
        B[c0:, m0:] = draw_b(c1 - c0, 1, k, self.init_b, self.density).to(B)
        R_like = torch.empty((k * c1, *weight.shape[1:]), dtype=self.R.dtype, device=self.R.device)
        R = grown(self.R.detach(), random_like(R_like, self.init_r))
        if self.R_mask is not None:  # new connections exist with the same density
            self.R_mask = grown(self.R_mask, draw_mask(R.shape, self.density).to(self.R_mask.device))
            R = R * self.R_mask
        self.B, self.R = B, nn.Parameter(R)
        resized_warning(self, old, self.weight_shape)

    @property
    def groups(self) -> int:
        return self.R.shape[0] // self.B.shape[1]

    def factors(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(B, R): each backward sends δ through B, then R, or through B·R, whichever costs less."""
        return self.B, self.masked_r()

    def masked_r(self) -> Tensor:
        """R as the backward uses it: R itself, or with sparse feedback R ⊙ mask, so that R's
        gradient is masked too and its missing connections stay zero."""
        return self.R if self.R_mask is None else self.R * self.R_mask

    def matrix(self, weight: Tensor) -> Tensor:
        kind = self.R.device.type
        if torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return product(self.B, self.masked_r())
        return product(self.B, self.masked_r())


def draw_b(c_out: int, groups: int, k: int, init_b: str, density: float = 1.0) -> Tensor:
    """B (C_out, k·C_out/groups), one block per group, drawn on the CPU from torch's RNG.

    ``density`` < 1 (random B only): U(±√(3/(d·m))), then each entry kept with probability d
    (the authors' xavier gain √((1+1/k)/(2d)) and mask), so that E[B Bᵀ] = I still."""
    rows, m = c_out // groups, k * (c_out // groups)
    if init_b == "identity":
        return torch.eye(rows).repeat(groups, 1)
    if init_b == "orthogonal":
        return torch.cat([nn.init.orthogonal_(torch.empty(rows, m)) for _ in range(groups)])
    bound = math.sqrt(3 / (density * m))
    B = (2 * torch.rand(c_out, m) - 1) * bound
    return B if density == 1 else B * draw_mask(B.shape, density)


def draw_mask(shape, density: float) -> Tensor:
    """A fixed connection mask: each entry True with probability ``density`` (the authors'
    ``torch.rand_like(t) < density``), drawn on the CPU from torch's RNG."""
    return torch.rand(shape) < density


@register
@dataclass
class PFA(Rule):
    """Product Feedback Alignment: feedback B·R, B fixed, R learned by ∇R = Bᵀ∇W."""

    name = "pfa"
    exact_options = {"k": 1, "init_b": "identity"}  # B·R = R
    k: int = 10  # expansion ratio: k·N_out intermediate units
    init_b: str = "random"  # "random" E[BBᵀ]=I | "orthogonal" BBᵀ=I | "identity" (k=1)
    init_r: str = "xavier"  # initial R: "xavier" (authors) | "kaiming"
    b_conn_density: float = 1.0  # fraction of B's and R's entries kept (authors' name); 1 = dense

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"rule 'pfa': k={self.k!r} is not valid; give an integer >= 1")
        check_choice(self.name, "init_b", self.init_b, INIT_B)
        check_choice(self.name, "init_r", self.init_r, INITS)
        if self.init_b == "identity" and self.k != 1:
            raise ValueError(f"rule 'pfa': init_b='identity' needs k=1 (B = I); got k={self.k!r}")
        d = self.b_conn_density
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise ValueError(f"rule 'pfa': b_conn_density={d!r} is not valid; give a number in (0, 1]")
        if d < 1 and self.init_b != "random":
            raise ValueError(f"rule 'pfa': b_conn_density={d!r} needs init_b='random' (a sparse B is neither "
                             f"I nor orthonormal); got init_b={self.init_b!r}")

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        c_out, d = weight.shape[0], float(self.b_conn_density)
        R_like = torch.empty((self.k * c_out, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
        R = random_like(R_like, self.init_r)
        B = draw_b(c_out, groups, self.k, self.init_b, d).to(device=weight.device, dtype=weight.dtype)
        R_mask = None
        if d < 1:
            R_mask = draw_mask(R.shape, d).to(weight.device)
            R = R * R_mask
        return ProductFeedback(B, R, self.init_b, self.init_r, d, R_mask)
