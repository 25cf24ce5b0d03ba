"""Each rule builds exactly the feedback its equation gives, and learns."""

import copy
import re
import math

import pytest
import torch
from torch import nn

import alignlab
import alignlab.optim
from alignlab.rules.brsf import draw_magnitudes, magnitude_bound
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
    a15 = magnitude_bound(a)  # rounded to 15 significant bits, so every level is exact in fp32
    assert abs(a15 - a) < a / 2**15 and a15 != a
    R = layer.feedback.R
    k = R / (a15 / 256) - 0.5
    assert torch.equal(k, k.round())  # (k + 1/2)·a/256 exactly
    assert k.round().min() == 0 and k.round().max() == 255
    assert abs(R.mean().item() - a / 2) < 0.01 * a and abs(R.var().item() - a * a / 12) < 0.02 * a * a / 12
    before = R.clone()
    layer.feedback.matrix(layer.weight)
    assert torch.equal(layer.feedback.R, before)  # W as drawn for: kept
    with torch.no_grad():  # one ulp of one entry
        layer.weight[3, 7] = torch.nextafter(layer.weight[3, 7], torch.tensor(1.0))
    layer.feedback.matrix(layer.weight)
    assert not torch.equal(layer.feedback.R, before)


def _mix32_by_hand(x):
    """Wellons' hash32 as brsf's docstring gives it, on Python ints mod 2³²."""
    x ^= x >> 16
    x = x * 0x21F0AAAD % 2**32
    x ^= x >> 15
    x = x * 0x735A2D97 % 2**32
    return x ^ (x >> 15)


def _levels_by_hand(seed, step, n):
    """The bytes k of draw ``step`` of ``seed``, one word at a time: m and c hash chains over the
    32-bit halves (seed_lo, seed_hi, step_lo, step_hi), c in reverse order, m made odd; word i
    h(i·m + c mod 2³²); its bytes least significant first."""
    parts = [seed % 2**32, seed >> 32, step % 2**32, step >> 32]
    m, c = 0x243F6A88, 0x85A308D3
    for p in parts:
        m = _mix32_by_hand(m ^ p)
    for p in reversed(parts):
        c = _mix32_by_hand(c ^ p)
    m |= 1
    levels = []
    for i in range((n + 3) // 4):
        word = _mix32_by_hand((i * m + c) % 2**32)
        levels += [(word >> (8 * j)) & 255 for j in range(4)]
    return levels[:n]


def test_brsf_draw_is_the_documented_counter_hash():
    seed, step, bound = 2**61 + 12345, 2**33 + 7, 0.3
    got = draw_magnitudes(torch.empty(5, 7), bound, seed, step)
    k = torch.tensor(_levels_by_hand(seed, step, 35), dtype=torch.float64).view(5, 7)
    a = magnitude_bound(bound)
    assert torch.equal(got.double(), (k + 0.5) * (a / 256))  # (k + ½)·a/256, exact in fp32
    # the buffers as a compiled graph reads them (int64 tensors) give the same draw
    assert torch.equal(draw_magnitudes(torch.empty(5, 7), bound, torch.tensor(seed), torch.tensor(step)), got)
    # other dtypes: computed in fp32, then cast
    assert torch.equal(draw_magnitudes(torch.empty(5, 7, dtype=torch.bfloat16), bound, seed, step), got.bfloat16())
    # a converted layer holds draw 0 of its seed, and counts it
    layer = alignlab.convert(nn.Sequential(nn.Linear(7, 5)), rule="brsf")[0]
    fb = layer.feedback
    k0 = torch.tensor(_levels_by_hand(int(fb.seed), 0, 35), dtype=torch.float64).view(5, 7)
    assert torch.equal(fb.R.double(), (k0 + 0.5) * (magnitude_bound(1 / math.sqrt(7)) / 256)) and int(fb.step) == 1


def test_brsf_draws_are_uniform_and_independent():
    """|R| ~ U(0, a) at 8-bit resolution: the 256 levels equally likely (χ² test), mean a/2,
    variance a²/12·(1 − 1/65536); no correlation between neighbouring entries (within and across
    the 4-level words), between the pairs' joint levels (χ²), between successive draws of a
    layer and between seeds."""
    from alignlab.rules.brsf import draw_magnitudes

    a, shape = magnitude_bound(0.05), (1000, 1000)
    n = math.prod(shape)
    R = draw_magnitudes(torch.empty(shape), a, 7, 3).double()
    k = (R / (a / 256) - 0.5).round().long().flatten()
    assert k.min() == 0 and k.max() == 255
    counts = torch.bincount(k, minlength=256).double()
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert chi2 < 255 + 5 * math.sqrt(2 * 255), chi2  # χ²(255): mean 255, sd 22.6
    assert abs(R.mean() - a / 2) < 4 * (a / math.sqrt(12)) / math.sqrt(n)
    var = a * a / 12 * (1 - 1 / 65536)
    assert abs(R.var() - var) < 0.01 * var
    flat = R.flatten()

    def corr(u, v):
        return torch.corrcoef(torch.stack([u, v]))[0, 1].abs().item()

    bound = 4 / math.sqrt(n)
    for lag in (1, 2, 3, 4, 5, 1000):  # within a word (1–3), across words (4, 5), across rows
        assert corr(flat[:-lag], flat[lag:]) < bound, lag
    pairs = (k[0::2] >> 4) * 16 + (k[1::2] >> 4)  # the joint of neighbours, 16 × 16 cells
    joint = torch.bincount(pairs, minlength=256).double()
    chi2 = ((joint - n / 2 / 256) ** 2 / (n / 2 / 256)).sum()
    assert chi2 < 255 + 5 * math.sqrt(2 * 255), chi2
    for seed, step in ((7, 4), (8, 3), (7 + 2**32, 3)):  # next draw, next seed, seed's high half
        other = draw_magnitudes(torch.empty(shape), a, seed, step).double().flatten()
        assert corr(flat, other) < bound, (seed, step)
        assert (other == flat).double().mean() < 2 / 256  # equal levels no more often than by chance


def test_brsf_fingerprint_sums_ws_bits_as_64_bit_words():
    from alignlab.rules import base
    from alignlab.rules.brsf import fingerprint

    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    words = w.view(-1).view(torch.int64)
    assert torch.equal(fingerprint(w), words.sum().reshape(1))  # wrapping int64 sum of fp32 pairs
    assert torch.equal(fingerprint(w.T.contiguous().T), fingerprint(w.T.contiguous()))  # a transpose: its storage
    odd = torch.randn(3, 5)
    assert torch.equal(fingerprint(odd), base.fingerprint(odd))  # 15 entries: the per-entry sum
    k = torch.randn(8, 6, 3, 3)
    nhwc = k.to(memory_format=torch.channels_last)
    assert not nhwc.is_contiguous() and not torch.equal(nhwc.permute(0, 2, 3, 1).reshape(-1), k.reshape(-1))  # other storage
    assert torch.equal(fingerprint(nhwc), fingerprint(k))  # a channels-last kernel: the NCHW stamp
    before = fingerprint(w)
    w.add_(0)
    assert torch.equal(fingerprint(w), before)
    for i in (0, 31, 59):  # one ulp of any entry, in either half of its 64-bit word
        v = w.clone()
        v.view(-1)[i] = torch.nextafter(v.view(-1)[i], torch.tensor(2.0))
        assert not torch.equal(fingerprint(v), before), i


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


# KP: which optimizers give B exactly W's update (docs/rules.md#kp). W − B follows the scalar
# recursion the optimizer applies to the decay term alone, so for momentum the expected factor
# c_t is simulated on scalars; None: c_t = (1 − ηλ)^t.
LR, WD = 0.01, 0.1


def _sgd_momentum_factor(steps, nesterov):
    d, buf = 1.0, None
    for _ in range(steps):
        g = WD * d  # the loss gradients of W and B are equal: only the decay terms differ
        buf = g if buf is None else 0.9 * buf + g
        d -= LR * (g + 0.9 * buf if nesterov else buf)
    return d


KP_EXACT = {  # name: (build optimizer, expected c_t after t steps)
    "sgd": (lambda m: torch.optim.SGD(m.parameters(), lr=LR, weight_decay=WD), lambda t: (1 - LR * WD) ** t),
    "sgd_no_decay": (lambda m: torch.optim.SGD(m.parameters(), lr=LR), lambda t: 1.0),
    "sgd_momentum": (lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=WD),
                     lambda t: _sgd_momentum_factor(t, nesterov=False)),
    "sgd_nesterov": (lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=WD),
                     lambda t: _sgd_momentum_factor(t, nesterov=True)),
    "adam_no_decay": (lambda m: torch.optim.Adam(m.parameters(), lr=LR), lambda t: 1.0),
    "adamw": (lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=WD), lambda t: (1 - LR * WD) ** t),
    "torch_muon": (lambda m: torch.optim.Muon([p for p in m.parameters() if p.dim() == 2], lr=LR, weight_decay=WD),
                   lambda t: (1 - LR * WD) ** t),
    "alignlab_muon": (lambda m: alignlab.optim.build_optimizer(m, "muon", lr=LR, weight_decay=WD),
                      lambda t: (1 - LR * WD) ** t),
}
KP_COUPLED_L2 = {  # decay added to the gradient, then normalised entry by entry
    "adam_l2": lambda m: torch.optim.Adam(m.parameters(), lr=LR, weight_decay=WD),
    "alignlab_adam": lambda m: alignlab.optim.build_optimizer(m, "adam", lr=LR, weight_decay=WD),
    "rmsprop_l2": lambda m: torch.optim.RMSprop(m.parameters(), lr=LR, weight_decay=WD),
}


def _kp_gaps(build, steps):
    """[(W − B after ``steps`` steps, W₀ − B₀)] per layer of a KP MLP trained by ``build(model)``."""
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="kp")
    opt = build(model)
    layers = [layer for _, layer, _ in alignlab.converted_layers(model)]
    start = [(layer.weight - layer.feedback.B).detach().clone() for layer in layers]
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 10, generator=g)).pow(2).mean().backward()
        opt.step()
    return [((layer.weight - layer.feedback.B).detach(), d0) for layer, d0 in zip(layers, start)]


def _multiple(gap, start):
    """(c, residual): the least-squares c in gap ≈ c·start and ‖gap − c·start‖/‖gap‖."""
    c = (gap * start).sum() / (start * start).sum()
    return c.item(), ((gap - c * start).norm() / gap.norm()).item()


@pytest.mark.parametrize("opt_name", list(KP_EXACT))
def test_kp_gap_stays_a_multiple_of_the_initial_gap(opt_name):
    """B in W's group, same lr and decay: W − B = c_t (W₀ − B₀), c_t one scalar (measured
    residual ≤ 3e-7 after 50 steps)."""
    build, factor = KP_EXACT[opt_name]
    steps = 30
    for gap, start in _kp_gaps(build, steps):
        c, residual = _multiple(gap, start)
        assert residual < 1e-5, residual
        assert c == pytest.approx(factor(steps), rel=1e-5)


@pytest.mark.parametrize("opt_name", list(KP_COUPLED_L2))
def test_kp_gap_is_not_a_multiple_under_coupled_l2_with_adaptive_optimizers(opt_name):
    """Adam/RMSprop with weight_decay (L2 in the gradient): λW and λB enter the moments, which
    normalise entry by entry, so W and B get different updates (measured residual 0.71–0.98
    after 50 steps; the exact optimizers' ≤ 3e-7)."""
    for gap, start in _kp_gaps(KP_COUPLED_L2[opt_name], 50):
        _, residual = _multiple(gap, start)
        assert residual > 0.3, residual


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


# --- usf's scales, Lance & Kieu's uSF variants, BioTorch's options ----------------------------


def test_usf_kaiming_and_spectral_scales_by_hand():
    W = torch.tensor([[3.0, -1.0, 0.5], [-0.25, 2.0, 1.0]])
    S = torch.sign(W)
    kai = alignlab.rules.get("usf", scale="kaiming").build(W).matrix(W)
    torch.testing.assert_close(kai, S / math.sqrt(3 * 3))  # 1/√(3·fan_in): the std of U(±1/√fan_in)
    spec = alignlab.rules.get("usf", scale="spectral").build(W).matrix(W)
    torch.testing.assert_close(torch.linalg.svdvals(spec)[0], torch.linalg.svdvals(W)[0])  # ‖B‖₂ = ‖W‖₂
    torch.testing.assert_close(spec, S * torch.linalg.svdvals(W)[0] / torch.linalg.svdvals(S)[0])
    # a conv kernel is seen as its (out, in·k·k) matrix, as torch's spectral_norm sees it
    K = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    B = alignlab.rules.get("usf", scale="spectral").build(K).matrix(K)
    torch.testing.assert_close(torch.linalg.matrix_norm(B.reshape(4, -1), 2), torch.linalg.matrix_norm(K.reshape(4, -1), 2))
    assert torch.equal(torch.sign(B), torch.sign(K))
    conv = alignlab.rules.get("usf", scale="kaiming").build(K).matrix(K)
    torch.testing.assert_close(conv, torch.sign(K) / math.sqrt(3 * 2 * 9))


def test_usf_rms_is_lance_kieu_usf_sn_as_their_code_computes_it():
    """Their uSF SN: W.norm(2)·sign(W)/(sign(W).norm(2) + 1e-8); Tensor.norm(2) is the flattened
    (Frobenius) norm, so on a W without zero entries it is usf's default scale "rms"."""
    W = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    theirs = W.norm(2) * W.sign() / (W.sign().norm(2) + 1e-8)
    ours = alignlab.rules.get("usf").build(W).matrix(W)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.linalg.vector_norm(ours), torch.linalg.vector_norm(W))


def test_frsf_normal_init_is_lance_kieu_usf_init():
    """uSF Init: B_t = |B₀| ⊙ sign(W_t), B₀ ~ N(0, σ²) drawn once (σ·randn, as their code)."""
    net = nn.Sequential(nn.Linear(6, 5))
    torch.manual_seed(7)
    layer = alignlab.convert(net, rule="frsf", init="normal", std=0.1)[0]
    torch.manual_seed(7)
    B0 = torch.randn(5, 6) * 0.1
    assert torch.equal(layer.feedback.R, B0.abs())
    torch.testing.assert_close(layer.feedback.matrix(layer.weight), B0.abs() * torch.sign(layer.weight.detach()))
    with torch.no_grad():
        layer.weight.neg_()
    torch.testing.assert_close(layer.feedback.matrix(layer.weight), B0.abs() * torch.sign(layer.weight.detach()))


@pytest.mark.parametrize("rule", ["fa", "frsf"])
def test_normal_init_draws_sigma_randn(rule):
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(400, 300, bias=False)), rule=rule, init="normal", std=0.01)[0]
    t = {"fa": "B", "frsf": "R"}[rule]
    drawn = getattr(layer.feedback, t).detach()
    if rule == "frsf":  # |N(0, σ²)|: mean σ√(2/π)
        assert abs(drawn.mean().item() - 0.01 * math.sqrt(2 / math.pi)) < 2e-4
    else:
        assert abs(drawn.std().item() - 0.01) < 2e-4 and abs(drawn.mean().item()) < 2e-4
    # resized feedback draws its new entries the same way
    layer.weight = nn.Parameter(torch.randn(301, 400))
    layer(torch.randn(2, 400)).sum().backward()
    assert abs(getattr(layer.feedback, t)[300].detach().abs().mean().item() - 0.01 * math.sqrt(2 / math.pi)) < 2e-3


@pytest.mark.parametrize("rule, options, message", [
    ("usf", {"scale": "init"}, "scale='init' is not valid; choose 'rms', 'xavier', 'kaiming', 'spectral' or a positive number"),
    ("usf", {"constrain_weights": 1}, "constrain_weights=1 is not valid; choose one of False, True"),
    ("fa", {"init": "orthogonal"}, "init='orthogonal' is not valid; choose one of 'kaiming', 'xavier', 'normal'"),
    ("fa", {"init": "normal", "std": 0}, "std=0 is not valid; give a positive number"),
    ("frsf", {"std": True}, "std=True is not valid; give a positive number"),
    ("kp", {"init": "normal"}, "init='normal' is not valid; choose one of 'kaiming', 'xavier'"),
    ("brsf", {"init": "normal"}, "init='normal' is not valid; choose one of 'kaiming', 'xavier'"),
    ("brsf", {"constrain_weights": "yes"}, "constrain_weights='yes' is not valid; choose one of False, True"),
    ("frsf", {"constrain_weights": None}, "constrain_weights=None is not valid"),
    ("kp", {"constrain_weights": 0}, "constrain_weights=0 is not valid"),
    ("fa", {"constrain_weights": "false"}, "constrain_weights='false' is not valid"),
])
def test_new_options_are_validated(rule, options, message):
    with pytest.raises(ValueError, match=re.escape(f"rule {rule!r}: {message}")):
        alignlab.rules.get(rule, **options)


def test_existing_option_values_still_work():
    for scale in ("rms", "xavier", "kaiming", "spectral", 1.0, 2, 0.5):
        alignlab.rules.get("usf", scale=scale)
    for rule in ("fa", "frsf", "brsf", "kp"):
        for init in ("kaiming", "xavier"):
            assert alignlab.rules.get(rule, init=init).init == init
    assert alignlab.rules.get("fa").options() == {"init": "kaiming", "match_norm": False, "std": 0.1,
                                                 "constrain_weights": False, "conv_feedback": "shared"}


CLASSIC = ["fa", "usf", "frsf", "brsf", "kp"]


@pytest.mark.parametrize("rule", CLASSIC)
def test_constrain_weights_holds_w_norm_in_place_once_per_step(rule):
    """BioTorch's constrain_weights: W ← W·‖W₀‖_F/‖W‖_F before the forward uses it, here in place
    on the same Parameter (the optimizer keeps training it), once per new W version."""
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule=rule, constrain_weights=True)[0]
    param = layer.weight
    n0 = torch.linalg.vector_norm(param.detach())
    assert torch.equal(layer.feedback.weight_norm, n0) and "feedback.weight_norm" in layer.state_dict()
    direction = param.detach() / n0
    with torch.no_grad():  # an optimizer step that triples W
        param.mul_(3)
    x = torch.randn(4, 6)
    with torch.no_grad():  # evaluation (no grad) sees the rescaled W too, as BioTorch's forward does
        evaluated = layer(x)
    torch.testing.assert_close(torch.linalg.vector_norm(param.detach()), n0)
    torch.testing.assert_close(evaluated, nn.functional.linear(x, direction * n0, layer.bias))
    with torch.no_grad():  # the next step
        param.mul_(3)
    out = layer(x)
    assert layer.weight is param
    torch.testing.assert_close(param.detach(), direction * n0)
    torch.testing.assert_close(out, nn.functional.linear(x, direction * n0, layer.bias))
    version = param._version
    out2 = layer(x)  # a second call in the same step: no second rescale, both backwards work
    assert param._version == version
    (out.sum() + out2.sum()).backward()
    torch.testing.assert_close(param.grad, 2 * torch.ones(4, 5).mT @ x)


@pytest.mark.parametrize("rule", CLASSIC)
def test_constrain_weights_off_by_default_leaves_state_dict_as_before(rule):
    layer = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule=rule)[0]
    assert not any("weight_norm" in k for k in layer.state_dict())
    w = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.mul_(3)
    layer(torch.randn(2, 6))
    torch.testing.assert_close(layer.weight.detach(), 3 * w)


@pytest.mark.parametrize("rule", CLASSIC)
def test_constrain_weights_training_keeps_norm_and_moves_direction(rule):
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule=rule, constrain_weights=True)
    layers = [layer for _, layer, _ in alignlab.converted_layers(model)]
    n0 = [torch.linalg.vector_norm(layer.weight.detach()).clone() for layer in layers]
    w0 = [layer.weight.detach().clone() for layer in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 10), torch.randint(0, 4, (64,))
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model(x)  # the next training forward holds the norms
    for layer, n, w in zip(layers, n0, w0):
        torch.testing.assert_close(torch.linalg.vector_norm(layer.weight.detach()), n)
        assert angle(layer.weight.detach(), w) > 1


def test_constrain_weights_raises_for_a_computed_weight():
    feedback = alignlab.rules.get("fa", constrain_weights=True).build(torch.randn(3, 2), layer="head")
    w = nn.Parameter(torch.randn(3, 2))
    with pytest.raises(RuntimeError, match="constrain_weights rescales the weight of layer 'head' in place"):
        feedback.prepare(w * 2)


NEW_SETTINGS = [
    alignlab.rules.get("usf", scale="spectral"),
    alignlab.rules.get("usf", scale="kaiming"),
    alignlab.rules.get("frsf", init="normal", std=0.1),  # Lance & Kieu's uSF Init
    *[alignlab.rules.get(r, constrain_weights=True) for r in CLASSIC],
]


def _label(rule):
    return "-".join([rule.name, *(f"{k}={v}" for k, v in rule.options().items())])


@pytest.mark.parametrize("rule", NEW_SETTINGS, ids=_label)
def test_new_option_settings_keep_the_contract(rule):
    """The contract's mechanics under each new setting; training checks too for the sign rules'
    new settings (Lance & Kieu's variants, the norm constraint: fa's and kp's use the same
    hold_norm)."""
    from alignlab.testing import check_rule
    checks = ["state_dict_round_trip", "bf16_autocast", "transformer"]
    if rule.name in ("usf", "frsf"):
        checks += ["trains_mlp", "trains_cnn"]
    check_rule(rule, checks)
    check_rule(rule, ["compile"])  # fullgraph, three steps: no graph break, eager's gradients
