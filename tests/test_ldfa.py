"""ldfa: B = PᵀQ of rank r; P learns δ's principal subspace by Oja's rule, Q by projected KP."""

import copy
import io
import math

import pytest
import torch
from torch import nn

import alignlab
from alignlab.diagnostics.alignment import measure_alignment
from alignlab.optim import build_optimizer
from alignlab.testing import bars_task, mlp, small_cnn


def fb(layer):
    return layer.feedback


def matrix(layer):
    return layer.feedback.matrix(layer.weight).detach()


def oja_by_hand(P, delta, normalize, rate=1.0):
    """P's gradient from Oja's subspace rule, one sample at a time: −rate·⟨y δᵀ − y yᵀ P⟩."""
    if normalize == "batch":
        delta = delta - delta.mean(0)
        delta = delta / delta.std(0, correction=0).max()
    step = torch.zeros_like(P)
    for d in delta:
        y = P @ d
        step += torch.outer(y, d) - torch.outer(y, y) @ P
    return -rate * step / len(delta)


def principal_cosines(A, B):
    """Cosines of the principal angles between the row spaces of A and B (ascending)."""
    qa = torch.linalg.qr(A.double().mT)[0]
    qb = torch.linalg.qr(B.double().mT)[0]
    return torch.linalg.svdvals(qa.mT @ qb).sort().values


# --- options ---------------------------------------------------------------------------------


def test_defaults_and_per_layer_rank():
    rule = alignlab.rules.get("ldfa")
    assert rule.options() == {"rank": 10, "learn_p": True, "learn_q": True, "p_init": "orthogonal", "oja_rate": 1.0,
                              "normalize": "batch", "init": "kaiming"}
    model = alignlab.convert(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4), nn.Conv1d(4, 6, 3)),
                             rule="ldfa")
    assert [tuple(fb(model[i]).P.shape) for i in (0, 2, 3)] == [(10, 32), (4, 4), (6, 6)]  # min(r, N_out)
    assert [tuple(fb(model[i]).Q.shape) for i in (0, 2, 3)] == [(10, 10), (4, 32), (6, 4, 3)]
    full = alignlab.convert(nn.Sequential(nn.Linear(3, 20)), rule="ldfa", rank="full")[0]
    assert fb(full).P.shape == (20, 20) and fb(full).Q.shape == (20, 3)
    P = fb(model[0]).P.detach()
    torch.testing.assert_close(P @ P.T, torch.eye(10))  # orthonormal rows
    ident = alignlab.convert(nn.Sequential(nn.Linear(3, 5)), rule="ldfa", rank=2, p_init="identity", learn_p=False)[0]
    assert torch.equal(fb(ident).P, torch.eye(5)[:2]) and not fb(ident).P.requires_grad
    assert isinstance(fb(ident).Q, nn.Parameter) and fb(ident).Q.requires_grad


@pytest.mark.parametrize("options, match", [
    ({"rank": 0}, "rank=0"), ({"rank": -3}, "rank=-3"), ({"rank": 2.5}, "rank=2.5"), ({"rank": "half"}, "rank='half'"),
    ({"rank": True}, "rank=True"), ({"rank": None}, "rank=None"), ({"p_init": "random"}, "p_init='random'"),
    ({"normalize": "std"}, "normalize='std'"), ({"init": "normal"}, "init='normal'"), ({"learn_p": "yes"}, "learn_p='yes'"),
    ({"learn_q": 0}, "learn_q=0"),
    ({"oja_rate": -1.0}, "oja_rate=-1.0"), ({"oja_rate": math.nan}, "oja_rate=nan"), ({"oja_rate": "1"}, "oja_rate='1'"),
    ({"rnak": 3}, "unknown option 'rnak' for rule 'ldfa'; valid options: rank, learn_p, learn_q, p_init, oja_rate, normalize, init"),
])
def test_bad_options_raise_one_line_value_errors(options, match):
    with pytest.raises(ValueError, match=match) as info:
        alignlab.convert(nn.Linear(4, 4), rule="ldfa", **options)
    assert "\n" not in str(info.value) and "ldfa" in str(info.value)


# --- Q: Kolen-Pollack, projected; B = PᵀQ --------------------------------------------------


def test_full_rank_with_p_fixed_to_identity_is_exactly_kp():
    def net():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 16),
                             nn.ReLU(), nn.Linear(16, 3))

    torch.manual_seed(0)
    base = net()
    torch.manual_seed(1)
    kp = alignlab.convert(copy.deepcopy(base), rule="kp")
    torch.manual_seed(1)
    ldfa = alignlab.convert(copy.deepcopy(base), rule="ldfa", rank="full", p_init="identity", learn_p=False)
    layers = [(a, b) for (_, a, _), (_, b, _) in zip(alignlab.converted_layers(kp), alignlab.converted_layers(ldfa))]
    for a, b in layers:  # the same initial B, drawn from the same seed
        assert torch.equal(matrix(b), a.feedback.B.detach())
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1) for m in (kp, ldfa)]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        for model, opt in zip((kp, ldfa), opts):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for a, b in layers:
            torch.testing.assert_close(matrix(b), a.feedback.B.detach(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(b.weight, a.weight, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(b.bias, a.bias, rtol=1e-6, atol=1e-7)
            assert torch.equal(b.feedback.P, torch.eye(b.weight.shape[0]))
    assert not torch.allclose(matrix(layers[1][1]), layers[1][1].weight.detach(), atol=1e-3)  # B ≠ W yet


def test_q_gradient_is_p_times_weight_gradient_and_input_gradient_uses_ptq():
    torch.manual_seed(0)
    lin = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="ldfa", rank=3)[0]
    x = torch.randn(2, 7, 6, requires_grad=True)  # leading dims
    g = torch.randn(2, 7, 5)
    lin(x).backward(g)
    P, Q = fb(lin).P.detach(), fb(lin).Q.detach()
    torch.testing.assert_close(fb(lin).Q.grad, P @ lin.weight.grad)
    torch.testing.assert_close(x.grad, g @ (P.T @ Q))
    assert lin.weight.grad.data_ptr() != fb(lin).Q.grad.data_ptr()

    conv = alignlab.convert(nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)), rule="ldfa", rank=3)[0]
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    g = torch.randn(2, 6, 4, 4)
    conv(x).backward(g)
    P, Q = fb(conv).P.detach(), fb(conv).Q.detach()
    assert Q.shape == (3, 2, 3, 3)
    torch.testing.assert_close(fb(conv).Q.grad, (P @ conv.weight.grad.flatten(1)).view_as(Q))
    B = (P.T @ Q.flatten(1)).view_as(conv.weight)
    xb = x.detach().clone().requires_grad_(True)
    nn.functional.conv2d(xb, B, None, 2, 1, 1, 2).backward(g)  # BP through a conv whose kernel is PᵀQ
    torch.testing.assert_close(x.grad, xb.grad)


def test_q_tracks_p_times_w_with_w_decay_when_p_is_fixed():
    """W ← W − η(∇W + λW), Q ← Q − η(P∇W + λQ): so P W − Q shrinks by (1 − ηλ) every step."""
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="ldfa", rank=3, learn_p=False)
    lr, wd = 0.05, 0.2
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    layer = model[2]
    P = fb(layer).P.detach()
    for _ in range(4):
        gap = (P @ layer.weight - fb(layer).Q).detach().clone()
        opt.zero_grad()
        model(torch.randn(16, 10)).pow(2).mean().backward()
        opt.step()
        torch.testing.assert_close((P @ layer.weight - fb(layer).Q).detach(), (1 - lr * wd) * gap,
                                   rtol=1e-5, atol=1e-6)


def test_fixed_p_and_q_give_fixed_random_rank_r_feedback():
    """learn_p=False, learn_q=False: B = PᵀP B₀, rank r, unchanged by training (no P/Q grads)."""
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="ldfa", rank=3, learn_p=False, learn_q=False)
    layer = model[0]
    assert not any(p.requires_grad for p in layer.feedback.parameters())
    B0 = layer.feedback.matrix(layer.weight).detach().clone()
    assert torch.linalg.matrix_rank(B0) == 3
    opt = build_optimizer(model, "adamw", lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 10)).pow(2).mean().backward()
        opt.step()
    assert torch.equal(layer.feedback.matrix(layer.weight).detach(), B0)
    assert layer.feedback.P.grad is None and layer.feedback.Q.grad is None


def test_feedback_and_input_gradients_have_rank_at_most_r():
    torch.manual_seed(0)
    model = alignlab.convert(nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                                           nn.Linear(20, 5)), rule="ldfa", rank=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(32, 12)).pow(2).mean().backward()
        opt.step()
    for i in (0, 2, 4):
        assert torch.linalg.matrix_rank(matrix(model[i])) == 3
    h = torch.randn(64, 30, requires_grad=True)
    model[2](h).backward(torch.randn(64, 20))
    assert torch.linalg.matrix_rank(h.grad) == 3  # each sample's error lies in the same 3-dim space
    conv = alignlab.convert(nn.Sequential(nn.Conv2d(5, 8, 3)), rule="ldfa", rank=2)[0]
    assert torch.linalg.matrix_rank(matrix(conv).flatten(1)) == 2


# --- P: Oja's subspace rule on the error at the layer's output -----------------------------


@pytest.mark.parametrize("normalize, rate", [("none", 1.0), ("batch", 1.0), ("batch", 0.25)])
def test_p_gradient_is_ojas_rule_computed_by_hand(normalize, rate):
    torch.manual_seed(0)
    lin = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="ldfa", rank=3, normalize=normalize,
                           oja_rate=rate)[0]
    P = fb(lin).P.detach().clone()
    x, g = torch.randn(4, 3, 6), 3 * torch.randn(4, 3, 5) + 1
    lin(x).backward(g)
    expected = oja_by_hand(P, g.reshape(12, 5), normalize, rate)
    torch.testing.assert_close(fb(lin).P.grad, expected)
    lin(x).backward(g)  # a second backward adds, like any gradient
    torch.testing.assert_close(fb(lin).P.grad, 2 * expected)

    conv = alignlab.convert(nn.Sequential(nn.Conv2d(3, 6, 3)), rule="ldfa", rank=2, normalize=normalize,
                            oja_rate=rate)[0]
    P = fb(conv).P.detach().clone()
    g = torch.randn(2, 6, 4, 4)
    conv(torch.randn(2, 3, 6, 6)).backward(g)
    samples = g.permute(0, 2, 3, 1).reshape(32, 6)  # every output position is a sample
    torch.testing.assert_close(fb(conv).P.grad, oja_by_hand(P, samples, normalize, rate))


def test_batch_normalisation_makes_p_gradient_independent_of_the_error_scale():
    torch.manual_seed(0)
    lin = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="ldfa", rank=3)[0]
    x, g = torch.randn(16, 6), torch.randn(16, 5)
    lin(x).backward(g)
    first = fb(lin).P.grad.clone()
    lin.zero_grad()
    lin(x).backward(1e-4 * g + 3e-4)  # same errors, rescaled and shifted
    torch.testing.assert_close(fb(lin).P.grad, first, rtol=1e-4, atol=1e-6)
    assert first.abs().max() > 1e-2


def test_p_learns_only_from_backward_passes_that_reach_it():
    torch.manual_seed(0)
    model = alignlab.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), rule="ldfa", rank=2)
    x = torch.randn(8, 6, requires_grad=True)
    torch.autograd.grad(model(x).pow(2).sum(), [x, model[0].weight])
    assert all(p.grad is None for p in model.parameters())
    with alignlab.nn.exact():
        model(x).pow(2).sum().backward()
    assert all(fb(model[i]).P.grad is None and fb(model[i]).Q.grad is None for i in (0, 2))
    model.zero_grad(set_to_none=True)
    measure_alignment(model, nn.functional.cross_entropy, x.detach(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    assert all(p.grad is None for p in model.parameters())  # diagnostics touch no .grad
    frozen = alignlab.convert(nn.Sequential(nn.Linear(6, 5)), rule="ldfa", rank=2, learn_p=False)
    frozen(x).sum().backward()
    assert frozen[0].feedback.P.grad is None and frozen[0].feedback.Q.grad is not None


def test_compiled_model_gives_the_same_gradients_p_included():
    torch.manual_seed(0)
    eager = alignlab.convert(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 4)),
                             rule="ldfa", rank=3)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    x, y = bars_task(8)
    for model, call in ((eager, eager), (compiled_model, compiled)):
        nn.functional.cross_entropy(call(x), y).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    assert eager[0].feedback.P.grad.abs().sum() > 0 and eager[3].feedback.P.grad.abs().sum() > 0


@pytest.mark.parametrize("kind, rank", [("linear", 3), ("linear", 5), ("conv", 4)])
def test_p_converges_to_the_error_subspace(kind, rank):
    """The layer feeds a fixed linear readout R with k = 3 outputs, so δ = Rᵀe lies in R's row space."""
    torch.manual_seed(0)
    if kind == "linear":
        layer, readout, head = nn.Linear(8, 20), nn.Linear(20, 3, bias=False), nn.Identity()
        x = torch.randn(256, 8)
    else:  # every position's channel error lies in the 3-dim row space of a 1×1 readout
        layer, readout, head = nn.Conv2d(2, 12, 3, padding=1), nn.Conv2d(12, 3, 1, bias=False), nn.Flatten()
        x = torch.randn(32, 2, 5, 5)
    readout.requires_grad_(False)
    model = alignlab.convert(nn.Sequential(layer, readout, head), rule="ldfa", rank=rank, exclude=["1"])
    target = torch.randn_like(model(x))
    R = readout.weight.detach().flatten(1)  # k × N_out: the error subspace
    assert principal_cosines(R, fb(layer).P.detach()).min() < 0.9  # a random P misses it
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(150):
        idx = torch.randint(0, len(x), (32,))
        opt.zero_grad()
        nn.functional.mse_loss(model(x[idx]), target[idx]).backward()
        opt.step()
    P = fb(layer).P.detach()
    angles = torch.rad2deg(torch.arccos(principal_cosines(R, P).clamp(max=1)))
    assert angles.max() < 0.5, angles  # R's row space lies in P's (equals it when r = k)
    torch.testing.assert_close(P @ P.T, torch.eye(rank), atol=1e-3, rtol=0)  # Oja keeps P orthonormal


# --- plumbing --------------------------------------------------------------------------------


def test_self_attention_learns_p_and_cross_attention_is_refused():
    torch.manual_seed(0)
    mha = alignlab.convert(nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True)), rule="ldfa", rank=4)[0]
    x = torch.randn(3, 5, 8)
    mha(x, x, x)[0].pow(2).sum().backward()
    assert mha.in_proj_feedback.P.shape == (4, 24) and mha.in_proj_feedback.P.grad.abs().sum() > 0
    assert mha.out_proj.feedback.P.grad is not None
    with pytest.raises(RuntimeError, match="separate query/key/value"):
        mha(x, torch.randn(3, 6, 8), torch.randn(3, 6, 8))[0].sum().backward()


def test_import_alignlab_does_not_import_dynamo():
    """torch.compiler.disable is applied on first use: importing it costs ~1.5 s per import."""
    import subprocess
    import sys

    code = "import sys, alignlab; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
