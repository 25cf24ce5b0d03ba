"""Each rule builds exactly the feedback its equation gives, and learns."""

import copy
import math

import pytest
import torch
from torch import nn

import alignlab
from alignlab.rules.sign import SignFeedback
from alignlab.testing import mlp
from helpers import angle


def test_available_rules():
    """The paper rules are registered (others may be added: each is one file in rules/)."""
    assert {"bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "ldfa", "pfa"} <= set(alignlab.rules.available())


def _sign_rules():
    return [r for r in alignlab.rules.available()
            if isinstance(alignlab.rules.get(r).feedback(torch.ones(2, 2)), SignFeedback)]


def test_sign_rules_are_found():
    assert {"usf", "brsf", "frsf"} <= set(_sign_rules())


def test_fa_feedback_is_fixed_buffer_with_documented_init():
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(400, 300)), rule="fa")[0]
    B = layer.feedback.B
    assert not B.requires_grad and "feedback.B" in dict(layer.named_buffers())
    bound = 1 / math.sqrt(400)  # U(±1/√fan_in), like a fresh nn.Linear
    assert B.abs().max() <= bound and B.abs().max() > 0.99 * bound
    assert abs(B.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    assert angle(B, layer.weight) > 85  # independent of W


def test_fa_match_norm_scales_b_to_w():
    layer = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="fa", match_norm=True)[0]
    with torch.no_grad():
        layer.weight.mul_(3)
    M = layer.feedback.matrix(layer.weight)
    torch.testing.assert_close(M.norm(), layer.weight.norm())
    torch.testing.assert_close(M / M.norm(), layer.feedback.B / layer.feedback.B.norm())


def test_usf_feedback_is_scaled_sign_of_w():
    layer = alignlab.convert(nn.Sequential(nn.Conv2d(3, 4, 3)), rule="usf")[0]
    W = layer.weight.detach()
    s = W.norm() / math.sqrt(W.numel())
    torch.testing.assert_close(layer.feedback.matrix(layer.weight), s * torch.sign(W))
    fixed = alignlab.convert(nn.Sequential(nn.Linear(5, 3)), rule="usf", scale=1.0)[0]
    assert torch.equal(fixed.feedback.matrix(fixed.weight), torch.sign(fixed.weight.detach()))
    xav = alignlab.convert(nn.Sequential(nn.Linear(5, 3)), rule="usf", scale="xavier")[0]
    torch.testing.assert_close(xav.feedback.matrix(xav.weight), math.sqrt(2 / 8) * torch.sign(xav.weight.detach()))


def test_usf_backward_uses_sign_feedback():
    layer = alignlab.convert(nn.Sequential(nn.Linear(5, 3)), rule="usf", scale=1.0)[0]
    x = torch.randn(4, 5, requires_grad=True)
    g = torch.randn(4, 3)
    layer(x).backward(g)
    torch.testing.assert_close(x.grad, g @ torch.sign(layer.weight.detach()))


def test_frsf_magnitudes_fixed_signs_follow_w():
    layer = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="frsf")[0]
    R = layer.feedback.R.clone()
    torch.testing.assert_close(layer.feedback.matrix(layer.weight), R * torch.sign(layer.weight.detach()))
    with torch.no_grad():
        layer.weight.neg_()
    torch.testing.assert_close(layer.feedback.matrix(layer.weight), R * torch.sign(layer.weight.detach()))
    assert torch.equal(layer.feedback.R, R)


def test_brsf_redraws_magnitudes_each_step_reproducibly():
    torch.manual_seed(3)
    a = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="brsf")[0]
    torch.manual_seed(3)
    b = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="brsf")[0]
    B0 = a.feedback.matrix(a.weight).clone()  # B is rebuilt in place at the next step
    assert torch.equal(B0, a.feedback.matrix(a.weight))  # same W: no new draw
    assert torch.equal(torch.sign(B0), torch.sign(a.weight.detach()))
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    a(torch.randn(3, 6)).sum().backward()
    opt.step()
    B1 = a.feedback.matrix(a.weight).clone()
    assert torch.equal(torch.sign(B1), torch.sign(a.weight.detach()))
    assert not torch.allclose(B1.abs(), B0.abs())  # new magnitudes after the step
    assert int(a.feedback.step) == 2
    # a second layer with the same seed draws the same magnitudes, in the same order
    assert torch.equal(b.feedback.matrix(b.weight).abs(), B0.abs())
    with torch.no_grad():
        b.weight.add_(0)  # W's values unchanged: no new draw
    assert torch.equal(b.feedback.matrix(b.weight).abs(), B0.abs())
    with torch.no_grad():
        b.weight.add_(1e-3)  # any change of W's values is a new step
    assert torch.equal(b.feedback.matrix(b.weight).abs(), B1.abs())
    assert torch.equal(b.feedback.R, B1.abs()) and "feedback.R" in dict(b.named_buffers())


def test_brsf_magnitudes_are_8_bit_uniform_levels_and_any_bit_change_redraws():
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(400, 300)), rule="brsf")[0]
    a = 1 / math.sqrt(400)  # kaiming bound, as FA's B
    R = layer.feedback.R
    k = R / (a / 256) - 0.5
    torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-3)  # (k + 1/2)·a/256
    assert k.round().min() == 0 and k.round().max() == 255
    assert abs(R.mean().item() - a / 2) < 0.01 * a and abs(R.var().item() - a * a / 12) < 0.02 * a * a / 12
    before = R.clone()
    layer.feedback.matrix(layer.weight)
    assert torch.equal(layer.feedback.R, before)  # W as drawn for: kept
    with torch.no_grad():  # one ulp of one entry
        layer.weight[3, 7] = torch.nextafter(layer.weight[3, 7], torch.tensor(1.0))
    layer.feedback.matrix(layer.weight)
    assert not torch.equal(layer.feedback.R, before)


@pytest.mark.parametrize("rule", _sign_rules())
def test_sign_rules_rebuild_b_in_place_once_per_step(rule):
    layer = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule=rule)[0]
    B = layer.feedback.matrix(layer.weight)
    ptr, version = B.data_ptr(), B._version
    assert layer.feedback.matrix(layer.weight)._version == version  # same W: not rebuilt
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(3, 6)).sum().backward()
    opt.step()
    B1 = layer.feedback.matrix(layer.weight)
    assert B1.data_ptr() == ptr and B1._version > version
    torch.testing.assert_close(torch.sign(B1), torch.sign(layer.weight.detach()))


def test_kp_gives_b_the_weight_gradient_as_a_separate_tensor():
    layer = alignlab.convert(nn.Sequential(nn.Linear(5, 3)), rule="kp")[0]
    assert isinstance(layer.feedback.B, nn.Parameter)
    x = torch.randn(4, 5)
    layer(x).pow(2).sum().backward()
    assert torch.equal(layer.feedback.B.grad, layer.weight.grad)
    assert layer.feedback.B.grad.data_ptr() != layer.weight.grad.data_ptr()


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw", "muon"])
def test_kp_b_gets_w_update_and_decay_under_any_optimizer(opt_name):
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="kp")
    lr, wd = 0.01, 0.1
    params = list(model.parameters())
    if opt_name == "muon":
        opt = torch.optim.Muon([p for p in params if p.dim() == 2], lr=lr, weight_decay=wd)
    else:
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[opt_name]
        opt = cls(params, lr=lr, weight_decay=wd)
    layer = model[2]
    for _ in range(3):
        gap = (layer.weight - layer.feedback.B).detach().clone()
        opt.zero_grad()
        model(torch.randn(16, 10)).pow(2).mean().backward()
        opt.step()
        new_gap = (layer.weight - layer.feedback.B).detach()
        if opt_name == "adam":  # L2 decay enters the moments: the gap still shrinks
            assert new_gap.norm() < gap.norm()
        else:  # W − B ← (1 − η λ)(W − B), exactly
            torch.testing.assert_close(new_gap, (1 - lr * wd) * gap, atol=1e-6, rtol=1e-5)


def test_kp_angle_between_b_and_w_falls_during_training():
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="kp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(256, 10), torch.randint(0, 4, (256,))
    start = [angle(l.weight, l.feedback.B) for _, l, _ in alignlab.converted_layers(model)]
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    end = [angle(l.weight, l.feedback.B) for _, l, _ in alignlab.converted_layers(model)]
    assert all(s > 80 for s in start), start
    assert all(e < 0.5 * s for s, e in zip(start, end)), (start, end)
