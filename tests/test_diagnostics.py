"""Diagnostics against hand computations, invariances and the alignment effect."""

import copy
import math

import pytest
import torch
from torch import nn

import alignlab
from alignlab.diagnostics import (MinibatchCKA, cka, effective_rank, gradient_alignment, measure_alignment,
                                  participation_ratio, rsa, stable_rank, weight_alignment)
from alignlab.diagnostics.similarity import spearman
from helpers import with_feedback_equal_to_weights


# --- rank -------------------------------------------------------------------------------------

def test_effective_rank_by_hand():
    assert effective_rank(torch.eye(5)) == pytest.approx(5)
    assert effective_rank(torch.outer(torch.randn(6), torch.randn(4))) == pytest.approx(1, abs=1e-4)
    # σ = (3, 1): p = (3/4, 1/4), exp(−¾ ln ¾ − ¼ ln ¼)
    want = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0, 0.0]))) == pytest.approx(want, rel=1e-6)
    assert effective_rank(torch.zeros(3, 3)) == 0


def test_stable_rank_by_hand():
    assert stable_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(10 / 9)
    assert stable_rank(torch.eye(4)) == pytest.approx(4)


def test_participation_ratio_by_hand():
    # centred columns with variances 4 and 1, uncorrelated: (4 + 1)² / (16 + 1)
    x = torch.tensor([[2.0, 1.0], [-2.0, 1.0], [2.0, -1.0], [-2.0, -1.0]])
    assert participation_ratio(x) == pytest.approx(25 / 17)
    assert participation_ratio(x + 5) == pytest.approx(25 / 17)  # centring removes the offset


def test_conv_maps_count_positions_as_samples():
    channel = torch.randn(3, 1, 5, 5)
    x = channel.repeat(1, 4, 1, 1) * torch.tensor([1.0, 2, 3, 4])[None, :, None, None]  # rank 1 over channels
    assert effective_rank(x, conv=True) == pytest.approx(1, abs=1e-4)
    assert effective_rank(torch.randn(8, 4, 5, 5), conv=True) > 3.5


# --- similarity ---------------------------------------------------------------------------------

def test_cka_by_hand_and_invariances():
    torch.manual_seed(0)
    x = torch.randn(40, 10)
    assert cka(x, x) == pytest.approx(1)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    assert cka(x, 3.0 * x @ q) == pytest.approx(1)  # orthogonal transform and isotropic scale
    y = torch.randn(40, 6)
    assert cka(x, y) == pytest.approx(cka(x @ q * 0.5, y))
    assert cka(x, x * torch.arange(1.0, 11)) < 0.99  # not invariant to anisotropic scaling
    # hand computation: x = [1,2,3,4]ᵀ, y = [1,2,3,5]ᵀ (centred: a, b) → (a·b)² / (|a|²|b|²)
    a, b = torch.tensor([-1.5, -0.5, 0.5, 1.5]), torch.tensor([-1.75, -0.75, 0.25, 2.25])
    want = float((a @ b) ** 2 / ((a @ a) * (b @ b)))
    assert cka(torch.tensor([[1.0], [2], [3], [4]]), torch.tensor([[1.0], [2], [3], [5]])) == pytest.approx(want)


def test_debiased_cka_removes_the_bias_of_few_samples():
    torch.manual_seed(0)
    x, y = torch.randn(30, 500), torch.randn(30, 500)  # independent: true CKA is 0
    assert cka(x, y) > 0.4  # the plain estimate is far from 0 when n ≪ features
    assert abs(cka(x, y, debiased=True)) < 0.1
    assert cka(x, x, debiased=True) == pytest.approx(1)
    acc = MinibatchCKA()
    acc.update(x, y)
    assert acc.value() == pytest.approx(cka(x, y, debiased=True))


def test_similarity_bad_input():
    with pytest.raises(ValueError, match="same probe inputs: 4 rows vs 5"):
        cka(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="at least 4 probe inputs"):
        cka(torch.randn(3, 2), torch.randn(3, 2), debiased=True)


def test_spearman_with_ties_by_hand():
    # ranks (0, 1.5, 1.5, 3) and (0, 2, 1, 3): ρ = 4.5 / (√4.5 · √5)
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_rsa_identical_and_affine_rows():
    torch.manual_seed(0)
    x = torch.randn(12, 7)
    assert rsa(x, x) == pytest.approx(1)
    # correlation distance ignores per-input shift and scale
    assert rsa(x, 3 * x + torch.randn(12, 1)) == pytest.approx(1)
    assert abs(rsa(x, torch.randn(12, 7))) < 0.5


# --- alignment ---------------------------------------------------------------------------------

def mlp():
    return nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def test_feedback_equal_to_weights_gives_zero_angles():
    torch.manual_seed(0)
    x, y = torch.randn(16, 10), torch.randint(0, 4, (16,))
    for model in (with_feedback_equal_to_weights(mlp()), alignlab.convert(mlp(), rule="bp")):
        result = measure_alignment(model, nn.functional.cross_entropy, x, y)
        assert set(result.weights) == {"0", "4", "6"}
        assert all(a < 0.1 for a in result.weights.values()), result.weights
        assert all(a < 0.1 for a in result.errors.values()), result.errors


def test_measurement_leaves_the_model_and_rng_as_they_were():
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="fa")
    x, y = torch.randn(16, 10), torch.randint(0, 4, (16,))
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    gradient_alignment(model, nn.functional.cross_entropy, x, y)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm running statistics included
    assert torch.equal(torch.get_rng_state(), rng)


def test_fa_gradient_angle_starts_near_90_and_falls_while_training():
    torch.manual_seed(0)
    model = alignlab.convert(nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                           nn.Linear(64, 10)), rule="fa")
    teacher = torch.randn(20, 10)
    x = torch.randn(512, 20)
    y = (x @ teacher).argmax(1)
    loss = nn.functional.cross_entropy
    start = gradient_alignment(model, loss, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    end = gradient_alignment(model, loss, x, y)
    assert start["4"] < 1e-3 and end["4"] < 1e-3  # the output layer's update is always exact
    assert 75 < start["2"] < 105, start  # B and W start independent
    assert end["2"] < 60, end  # W has come to align with B (Lillicrap et al. 2016)


def test_weight_alignment_per_rule():
    torch.manual_seed(0)
    usf = alignlab.convert(nn.Sequential(nn.Linear(8, 6)), rule="usf")
    w = usf[0].weight.detach()
    got = weight_alignment(usf)["0"]
    cos = float(w.abs().sum() / (w.norm() * math.sqrt(w.numel())))  # ⟨sign W, W⟩ / (|sign W| |W|)
    assert got["angle"] == pytest.approx(math.degrees(math.acos(cos)), rel=1e-5)
    assert got["norm_ratio"] == pytest.approx(1, rel=1e-5)  # scale "rms": ‖B‖ = ‖W‖
    assert weight_alignment(alignlab.convert(nn.Sequential(nn.Linear(8, 6)), rule="bp"))["0"] == {"angle": 0.0, "norm_ratio": 1.0}
    assert weight_alignment(alignlab.convert(nn.Sequential(nn.Linear(8, 6)), rule="dfa")) == {}
    fa = weight_alignment(alignlab.convert(nn.Sequential(nn.Linear(80, 60)), rule="fa"))["0"]
    assert 80 < fa["angle"] < 100


def test_ranks_from_gram_eigenvalues_match_svd():
    torch.manual_seed(0)
    for shape in ((50, 8), (8, 50), (300, 300)):
        x = torch.randn(shape) @ torch.diag(torch.logspace(0, -2, shape[1]))
        s = torch.linalg.svdvals(x.double())
        from alignlab.diagnostics.rank import all_ranks, singular_values
        torch.testing.assert_close(singular_values(x)[: len(s)], s, atol=1e-8, rtol=1e-6)
        got = all_ranks(x)
        assert got == {"erank": effective_rank(x), "srank": stable_rank(x), "pr": participation_ratio(x)}
