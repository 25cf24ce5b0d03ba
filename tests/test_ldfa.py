"""ldfa: B = PᵀQ of rank r; P learns δ's principal subspace by Oja's rule, Q by projected KP."""

import copy
import io
import math

import pytest
import torch
from torch import nn

import alignlab
from alignlab.nn import product as product_module
from alignlab.diagnostics.alignment import measure_alignment
from alignlab.optim import build_optimizer
from alignlab.rules import ldfa as ldfa_module
from alignlab.rules.ldfa import DirectLowRankFeedback
from alignlab.testing import bars_task, mlp, small_cnn


def fb(layer):
    return layer.feedback


def matrix(layer):
    with torch.no_grad():
        return layer.feedback.matrix(layer.weight)


def oja_by_hand(P, delta, normalize, rate=1.0):
    """P's gradient from Oja's subspace rule, one sample at a time: −rate·⟨y δᵀ − y yᵀ P⟩."""
    if normalize == "batch":
        delta = delta - delta.mean(0)
        delta = delta / delta.std(0, correction=0).max()
    if normalize == "unit":  # each unit by its own standard deviation (units that never vary stay 0)
        delta = delta - delta.mean(0)
        std = delta.std(0, correction=0)
        delta = delta / torch.where(std > 0, std, 1.0)
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
                              "normalize": "batch", "init": "kaiming", "direct": False, "outputs": None,
                              "targets": False}
    assert rule.direct is False and not isinstance(fb(alignlab.convert(nn.Linear(3, 2), rule="ldfa")),
                                                   DirectLowRankFeedback)
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
    ({"rnak": 3}, "unknown option 'rnak' for rule 'ldfa'; valid options: direct, rank, learn_p, learn_q, p_init, "
                  "oja_rate, normalize, init, outputs, targets"),  # direct first: Rule's ClassVar holds its place
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


@pytest.mark.parametrize("route", ["moments", "rows"])
@pytest.mark.parametrize("normalize, rate", [("none", 1.0), ("batch", 1.0), ("batch", 0.25), ("unit", 1.0)])
def test_p_gradient_is_ojas_rule_computed_by_hand(normalize, rate, route, monkeypatch):
    monkeypatch.setattr(ldfa_module, "OJA_ROUTE", route)
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


# --- direct (rADFA): the output error e, compressed by each layer's P, straight to the layer --


class Probe(nn.Module):
    """Linear layers whose forward keeps each layer's input and the output with their gradients."""

    def __init__(self, sizes=(6, 9, 7, 5), act=nn.Tanh):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.act = act()

    def forward(self, x):
        self.inputs = []
        for i, layer in enumerate(self.layers):
            if i:
                x = self.act(x)
                if x.requires_grad:
                    x.retain_grad()
            self.inputs.append(x)
            x = layer(x)
        self.out = x
        if x.requires_grad:
            x.retain_grad()
        return x


def probe(**options):
    torch.manual_seed(0)
    model = alignlab.convert(Probe(), rule="ldfa", direct=True, **options)
    x = torch.randn(8, 6, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    return model, x, y


def test_direct_option_is_a_field_that_makes_the_rule_direct():
    rule = alignlab.rules.get("ldfa", direct=True)
    assert rule.direct is True and alignlab.rules.get("ldfa").direct is False
    assert rule.options()["direct"] is True and rule.data_parallel_exact is False
    assert alignlab.rules.get("ldfa", direct=True, learn_p=False).data_parallel_exact  # Oja's step is quadratic in e
    assert not alignlab.rules.get("ldfa", normalize="none").data_parallel_exact

    class Pair(nn.Module):  # returns (logits, features): convert's output= names the logits
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.body(x).relu()
            return h, self.head(h)

    model = alignlab.convert(Pair(), rule="ldfa", direct=True, output=1)
    assert model._alignlab_tap is not None and model.body.feedback.tap is model._alignlab_tap
    assert fb(model.body).P.shape == (3, 3)  # C = 3, the head's outputs
    nn.functional.cross_entropy(model(torch.randn(4, 6))[1], torch.tensor([0, 1, 2, 0])).backward()
    assert fb(model.body).P.grad is not None and fb(model.body).Q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="does not use it"):
        alignlab.convert(Pair(), rule="ldfa", output=1)


@pytest.mark.parametrize("options, match", [
    ({"targets": True}, "targets=True applies to direct feedback only; give direct=True"),
    ({"outputs": 4}, "outputs=4 applies to direct feedback only"),
    ({"direct": True, "outputs": 0}, "outputs=0"), ({"direct": True, "outputs": True}, "outputs=True"),
    ({"direct": True, "outputs": 2.0}, "outputs=2.0"), ({"direct": 1}, "direct=1"),
    ({"direct": True, "targets": "yes"}, "targets='yes'"),
    ({"direct": True, "targets": True, "learn_p": False}, "targets=True drives P's learning"),
    ({"direct": True, "normalize": "std"}, "normalize='std'"),
])
def test_direct_bad_option_combinations_raise_one_line_value_errors(options, match):
    with pytest.raises(ValueError, match=match) as info:
        alignlab.convert(nn.Linear(4, 4), rule="ldfa", **options)
    assert "\n" not in str(info.value) and "ldfa" in str(info.value)


def test_direct_sizes_p_for_the_models_output_error():
    model = alignlab.convert(mlp(d_out=30), rule="ldfa", direct=True)  # 10-32-32-30
    assert [tuple(fb(model[i]).P.shape) for i in (0, 2, 4)] == [(10, 30)] * 3  # every P compresses e
    assert [tuple(fb(model[i]).Q.shape) for i in (0, 2, 4)] == [(10, 10), (10, 32), (10, 32)]
    P = fb(model[2]).P.detach()
    torch.testing.assert_close(P @ P.T, torch.eye(10))  # orthonormal rows
    assert not torch.equal(P, fb(model[0]).P.detach())  # each layer its own P
    assert fb(alignlab.convert(mlp(), rule="ldfa", direct=True)[0]).P.shape == (4, 4)  # min(r, C)
    assert fb(alignlab.convert(mlp(d_out=30), rule="ldfa", direct=True, rank="full")[0]).P.shape == (30, 30)
    ident = alignlab.convert(mlp(), rule="ldfa", direct=True, rank=2, p_init="identity")[2]
    assert torch.equal(fb(ident).P, torch.eye(4)[:2])
    torch.manual_seed(3)
    a = alignlab.convert(mlp(), rule="ldfa", direct=True, rank=2)
    torch.manual_seed(3)
    b = alignlab.convert(mlp(), rule="ldfa", direct=True, rank=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # same seed, same P, Q

    # a model whose last converted layer is not its output: P is sized for the wrong C, one line says so
    headless = alignlab.convert(mlp(), rule="ldfa", direct=True, exclude=["4"])
    assert fb(headless[0]).P.shape == (10, 32)
    with pytest.raises(RuntimeError, match="convert with outputs=4") as info:
        headless(torch.randn(3, 10)).sum().backward()
    assert "\n" not in str(info.value)
    told = alignlab.convert(mlp(), rule="ldfa", direct=True, exclude=["4"], outputs=4, rank=3)
    assert fb(told[0]).P.shape == (3, 4)
    told(torch.randn(3, 10)).sum().backward()
    assert fb(told[2]).Q.grad is not None


def test_direct_input_gradient_is_the_compressed_output_error_expanded_by_q():
    """δ_in = (e Pᵀ) Q for every layer, e = ∂L/∂output; W's gradient stays the true local one."""
    model, x, y = probe(rank=2)
    nn.functional.cross_entropy(model(x), y).backward()
    e = model.out.grad
    for layer, inp in zip(model.layers, model.inputs):
        P, Q = fb(layer).P.detach(), fb(layer).Q.detach()
        assert P.shape == (2, 5) and Q.shape == (2, layer.in_features)
        torch.testing.assert_close(inp.grad, (e @ P.T) @ Q)
    last = model.layers[2]
    torch.testing.assert_close(last.weight.grad, e.T @ model.inputs[2].detach())

    # a Linear whose input has the output's positions: one error per position
    torch.manual_seed(0)
    seq = alignlab.convert(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), rule="ldfa", direct=True,
                           rank=2)
    x = torch.randn(2, 5, 4, requires_grad=True)
    out = seq(x)
    g = torch.randn(2, 5, 3)
    out.backward(g)
    P, Q = fb(seq[0]).P.detach(), fb(seq[0]).Q.detach()
    torch.testing.assert_close(x.grad, (g @ P.T) @ Q)

    # a conv: each sample's error, summed over positions, to every input position (dfa's broadcast)
    torch.manual_seed(0)
    cnn = alignlab.convert(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(48, 4)), rule="ldfa", direct=True, rank=3)
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    g = torch.randn(2, 4)
    cnn(x).backward(g)
    P, Q = fb(cnn[0]).P.detach(), fb(cnn[0]).Q.detach()
    assert Q.shape == (3, 2)
    torch.testing.assert_close(x.grad, ((g @ P.T) @ Q)[:, :, None, None].expand(2, 2, 4, 4))


def test_direct_input_gradients_have_rank_at_most_r():
    torch.manual_seed(0)
    model = alignlab.convert(Probe(sizes=(12, 30, 20, 8), act=nn.ReLU), rule="ldfa", direct=True, rank=2)
    x = torch.randn(64, 12, requires_grad=True)
    nn.functional.cross_entropy(model(x), torch.randint(0, 8, (64,))).backward()
    for inp in model.inputs:  # every sample's error lies in the same 2-dim row space of Q
        assert torch.linalg.matrix_rank(inp.grad) == 2
    assert torch.linalg.matrix_rank(model.out.grad) > 2


@pytest.mark.parametrize("normalize, rate", [("none", 1.0), ("batch", 0.5), ("unit", 1.0)])
def test_direct_p_and_q_gradients_are_the_update_rules_by_hand(normalize, rate):
    """P: −rate·Oja's step on e's rows; Q: (e Pᵀ)ᵀ x, x the layer's input."""
    model, x, y = probe(rank=2, normalize=normalize, oja_rate=rate)
    before = [fb(layer).P.detach().clone() for layer in model.layers]
    nn.functional.cross_entropy(model(x), y).backward()
    e = model.out.grad
    for layer, inp, P in zip(model.layers, model.inputs, before):
        torch.testing.assert_close(fb(layer).P.grad, oja_by_hand(P, e, normalize, rate))
        torch.testing.assert_close(fb(layer).Q.grad, (e @ P.T).T @ inp.detach())
    first = [(fb(layer).P.grad.clone(), fb(layer).Q.grad.clone()) for layer in model.layers]
    nn.functional.cross_entropy(model(x), y).backward()  # a second backward adds, like any gradient
    for layer, (p, q) in zip(model.layers, first):
        torch.testing.assert_close(fb(layer).P.grad, 2 * p)
        torch.testing.assert_close(fb(layer).Q.grad, 2 * q)

    torch.manual_seed(0)  # positions: every position a sample, in Oja's rule and in ∇Q
    seq = alignlab.convert(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), rule="ldfa", direct=True,
                           rank=2, normalize=normalize, oja_rate=rate)
    P = fb(seq[0]).P.detach().clone()
    x, g = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    seq(x).backward(g)
    torch.testing.assert_close(fb(seq[0]).P.grad, oja_by_hand(P, g.reshape(10, 3), normalize, rate))
    torch.testing.assert_close(fb(seq[0]).Q.grad, (g.reshape(10, 3) @ P.T).T @ x.reshape(10, 4))

    torch.manual_seed(0)  # a conv: the error summed over positions meets x summed over positions
    cnn = alignlab.convert(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(48, 4)), rule="ldfa", direct=True, rank=3, normalize=normalize)
    P = fb(cnn[0]).P.detach().clone()
    x, g = torch.randn(2, 2, 4, 4), torch.randn(2, 4)
    cnn(x).backward(g)
    torch.testing.assert_close(fb(cnn[0]).Q.grad, (g @ P.T).T @ x.sum((2, 3)))
    torch.testing.assert_close(fb(cnn[0]).P.grad, oja_by_hand(P, g, normalize))


def test_direct_q_tracks_its_kp_target_under_weight_decay():
    """With P fixed, Q ← Q − η((e Pᵀ)ᵀx + λQ): the same decay as W, through the user's optimizer."""
    model, x, y = probe(rank=2, learn_p=False)
    lr, wd = 0.1, 0.5
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    layer = model.layers[1]
    for _ in range(3):
        Q = fb(layer).Q.detach().clone()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        expected = Q - lr * ((model.out.grad @ fb(layer).P.detach().T).T @ model.inputs[1].detach() + wd * Q)
        opt.step()
        torch.testing.assert_close(fb(layer).Q.detach(), expected)
    assert fb(layer).P.grad is None


def test_direct_targets_drive_p_by_the_one_hot_labels():
    model, x, y = probe(rank=2, targets=True, normalize="unit")
    before = [fb(layer).P.detach().clone() for layer in model.layers]
    nn.functional.cross_entropy(model(x), y).backward()
    onehot = nn.functional.one_hot(y, 5).float()
    for layer, inp, P in zip(model.layers, model.inputs, before):
        torch.testing.assert_close(fb(layer).P.grad, oja_by_hand(P, onehot, "unit"))
        torch.testing.assert_close(fb(layer).Q.grad, (model.out.grad @ P.T).T @ inp.detach())  # Q still from e
    model.zero_grad()
    ignored = y.clone()
    ignored[:3] = -100  # ignored samples have no target: their rows of e are zero and are left out
    nn.functional.cross_entropy(model(x), ignored).backward()
    torch.testing.assert_close(fb(model.layers[0]).P.grad, oja_by_hand(before[0], onehot[3:], "unit"))
    with pytest.raises(RuntimeError, match="targets=True") as info:  # no softmax cross-entropy: no targets
        nn.functional.mse_loss(model(x), torch.randn(8, 5)).backward()
    assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="targets=True"):  # rows with several negative entries
        model(x).backward(-torch.rand(8, 5))


def test_direct_fixed_p_and_q_are_fixed_random_low_rank_direct_feedback():
    model, x, y = probe(rank=2, learn_p=False, learn_q=False)
    assert not any(p.requires_grad for layer in model.layers for p in fb(layer).parameters())
    start = {k: v.clone() for k, v in model.state_dict().items() if "feedback" in k}
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
    assert all(not layer._forward_pre_hooks for layer in model.layers)  # nothing to learn, no hook
    torch.testing.assert_close(model.inputs[1].grad, (model.out.grad @ start["layers.1.feedback.P"].T)
                               @ start["layers.1.feedback.Q"])


def test_direct_p_and_q_learn_only_from_backward_passes_that_reach_them():
    model, x, y = probe(rank=2)
    torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [x, model.layers[0].weight])
    assert all(p.grad is None for p in model.parameters())
    with alignlab.nn.exact():  # exact BP: W gets gradients, P and Q none
        nn.functional.cross_entropy(model(x), y).backward()
    assert model.layers[1].weight.grad is not None
    assert all(fb(layer).P.grad is None and fb(layer).Q.grad is None for layer in model.layers)
    with torch.no_grad():
        model(x)
    model.zero_grad(set_to_none=True)
    measure_alignment(model, nn.functional.cross_entropy, x.detach(), y)
    assert all(p.grad is None for p in model.parameters())  # diagnostics touch no .grad


def test_direct_copies_pickles_and_reverts():
    model, x, y = probe(rank=2)
    twin = copy.deepcopy(model)  # before the first forward: the copy hooks its own layers
    nn.functional.cross_entropy(twin(x), y).backward()
    assert all(p.grad is None for p in model.parameters())
    nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    model.inputs = model.out = None  # tensors of the last pass (with the tap's hooks) are not the model
    loaded = torch.load(io.BytesIO(_pickled(model)), weights_only=False)  # after it: hooks travel along
    loaded.zero_grad()
    nn.functional.cross_entropy(loaded(x), y).backward()
    torch.testing.assert_close(fb(loaded.layers[1]).Q.grad, fb(model.layers[1]).Q.grad)
    alignlab.revert(model)
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()  # plain BP, and the hooks are gone
    assert all(not layer._forward_pre_hooks for layer in model.layers) and not model._forward_pre_hooks


def test_direct_under_activation_checkpointing_gives_the_same_gradients():
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x, reentrant=None):
            h = self.a(x).tanh() if reentrant is None else checkpoint(lambda t: self.a(t).tanh(), x,
                                                                        use_reentrant=reentrant)
            return self.b(h)

    grads = []
    for reentrant in (None, True, False):  # the recomputed layer takes the slot of the pass it serves
        torch.manual_seed(0)
        model = alignlab.convert(Net(), rule="ldfa", direct=True, rank=2)
        x = torch.randn(4, 6, requires_grad=True)
        nn.functional.cross_entropy(model(x, reentrant), torch.tensor([0, 1, 2, 0])).backward()
        grads.append([x.grad, *(p.grad for p in model.parameters())])
    assert grads[0][3] is not None  # a.feedback.Q
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b)


def _pickled(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def test_direct_from_the_last_hidden_layer_as_the_authors_latest_script():
    """train_cifar_fc_DFA.py at its last commit: the head keeps (adjacent) ldfa feedback and the
    layers below receive the error at the head's input: a model that returns that hidden state
    names it with output=, and C is its width (the last layer given direct feedback)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.head = nn.Linear(6, 16), nn.Linear(16, 12), nn.Linear(12, 4)

        def forward(self, x):
            self.a = self.l1(x).relu()
            self.a.retain_grad()
            h = self.l2(self.a).relu()
            h.retain_grad()
            return self.head(h), h

    torch.manual_seed(0)
    rules = {"head": "ldfa", "*": alignlab.rules.get("ldfa", direct=True, rank=3)}
    model = alignlab.convert(Net(), rules, output=1)
    assert fb(model.l2).P.shape == (3, 12) and fb(model.head).P.shape == (4, 4)
    logits, h = model(torch.randn(8, 6))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3] * 2)).backward()
    P, Q = fb(model.l2).P.detach(), fb(model.l2).Q.detach()
    torch.testing.assert_close(model.a.grad, (h.grad @ P.T) @ Q)
    assert fb(model.head).P.grad is not None and fb(model.l1).Q.grad is not None


def test_direct_passes_the_contract_checks():
    """MLP and CNN train well above chance, state dicts round trip (weights_only), bf16 autocast,
    aot_eager compile gives eager's gradients (P and Q included), a transformer trains, diagnostics."""
    results = alignlab.testing.check_rule(alignlab.rules.get("ldfa", direct=True))
    assert results.pop("feedback_equal_to_weights_is_bp").startswith("n/a")
    assert set(results.values()) == {"ok"}, results


def test_direct_trains_a_small_mlp_below_full_rank():
    torch.manual_seed(0)  # r = 2 of C = 4 (the contract checks train at r = C)
    acc = alignlab.testing.train_and_test(alignlab.convert(mlp(), rule="ldfa", direct=True, rank=2),
                                          alignlab.testing.teacher_task)
    assert acc > 0.85, acc  # chance 0.25; measured 0.92


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir, options):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _ddp_run(options, rank, world)
        torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _ddp_run(options, rank=0, world=1):
    """3 SGD steps on bars; with ``world`` > 1, DDP and this rank's shard of every batch."""
    torch.manual_seed(0)
    model = alignlab.convert(small_cnn(), rule="ldfa", direct=True, **options)
    call = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(call.parameters(), lr=0.1, weight_decay=0.01)
    for step in range(3):
        x, y = bars_task(16, seed=step)
        opt.zero_grad()
        nn.functional.cross_entropy(call(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
        opt.step()
    return model


@pytest.mark.parametrize("options", [{"rank": 2, "learn_p": False}, {"rank": 2}])
def test_direct_under_ddp_ranks_hold_the_same_tensors(tmp_path, options):
    """P's and Q's gradients arrive through autograd, so DDP averages them like W's: the ranks never
    drift; with P fixed (data-parallel exact) they equal one process on whole batches."""
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path), options), nprocs=2, start_method="spawn",
                       join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    torch.manual_seed(0)
    start = alignlab.convert(small_cnn(), rule="ldfa", direct=True, **options).state_dict()
    assert not torch.equal(r0["0.feedback.Q"], start["0.feedback.Q"])
    assert torch.equal(r0["2.feedback.P"], start["2.feedback.P"]) == (not options.get("learn_p", True))
    if alignlab.rules.get("ldfa", direct=True, **options).data_parallel_exact:
        one = _ddp_run(options).state_dict()
        for key in r0:
            torch.testing.assert_close(r0[key], one[key], rtol=1e-5, atol=1e-6, msg=key)


# --- the route through the factors -------------------------------------------------------------


LAYERS = {
    "linear": (lambda: nn.Linear(64, 128), (8, 64)),
    "linear 3-d": (lambda: nn.Linear(64, 128), (2, 4, 64)),
    "conv2d": (lambda: nn.Conv2d(6, 32, 3, stride=2, padding=1), (2, 6, 9, 9)),
    "conv1d grouped": (lambda: nn.Conv1d(6, 12, 3, groups=3, dilation=2), (2, 6, 11)),
}


@pytest.mark.parametrize("case", LAYERS, ids=list(LAYERS))
@pytest.mark.parametrize("learn_p", [True, False])
def test_the_factored_route_gives_the_dense_routes_numbers(case, learn_p, monkeypatch):
    """δ through Pᵀ then Q (never forming PᵀQ), Q's gradient from the same h, P's Oja step from δ:
    every gradient equals the dense route's (grouped convs take the dense route either way)."""
    make, shape = LAYERS[case]
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(make()), rule="ldfa", rank=4, learn_p=learn_p)[0]
    fb = layer.feedback
    x = torch.randn(*shape)
    g = torch.randn(layer(x).shape)
    grads = []
    for route in ("factored", "dense"):
        monkeypatch.setattr(product_module, "FORCED", route)
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        layer(xi).backward(g)
        grads.append([xi.grad, layer.weight.grad, layer.bias.grad, fb.Q.grad, fb.P.grad])
    for name, a, b in zip(["x", "W", "b", "Q", "P"], *grads):
        if b is None:
            assert a is None and name == "P" and not learn_p
        else:
            torch.testing.assert_close(a, b, msg=name, atol=1e-5, rtol=1e-5)
    x1 = x.clone().requires_grad_(True)  # and the input gradient is δ through B = PᵀQ
    if case.startswith("linear"):
        nn.functional.linear(x1, matrix(layer)).backward(g)
    else:
        conv = getattr(nn.functional, f"conv{x.dim() - 2}d")
        conv(x1, matrix(layer), None, layer.stride, layer.padding, layer.dilation, layer.groups).backward(g)
    torch.testing.assert_close(grads[0][0], x1.grad, atol=1e-5, rtol=1e-5)




def test_ojas_quadratic_term_is_the_same_in_either_order():
    from alignlab.rules.ldfa import _yyP
    torch.manual_seed(0)
    for n, r, N in [(128, 10, 1024), (8, 64, 64)]:  # (yᵀy)P, then yᵀ(yP), the cheaper order
        y, P = torch.randn(n, r, dtype=torch.float64), torch.randn(r, N, dtype=torch.float64)
        torch.testing.assert_close(_yyP(y, P), y.T @ y @ P)


@pytest.mark.parametrize("normalize", ["none", "batch", "unit"])
def test_oja_routes_agree_and_the_moment_route_is_taken_where_it_costs_less(normalize, monkeypatch):
    """Few units (a LeNet conv's 6 channels): the errors' moments (N² per row); many (a wide
    MLP's 1024): the rows and h = δPᵀ (r·(N + r) per row)."""
    torch.manual_seed(0)
    assert ldfa_module.moments_cheaper(100352, 6, 6, normalize)
    assert not ldfa_module.moments_cheaper(128, 1024, 10, normalize)
    P = torch.linalg.qr(torch.randn(6, 5))[0].mT.contiguous()  # 5 × 6, orthonormal rows
    delta = 2 * torch.randn(3, 6, 4, 5, dtype=torch.float64) + 0.5
    delta[:, 2] = 0  # a dead unit (no error ever): "unit" leaves it 0
    delta[:, 4] = 1e-3 * delta[:, 4] + 30  # a large mean over a small spread: centred before the moments
    by_route = {}
    for route in ("moments", "rows"):
        monkeypatch.setattr(ldfa_module, "OJA_ROUTE", route)
        by_route[route] = ldfa_module.oja_step(P.double(), delta, normalize, dim=1)
        # float32, against float64: no cancellation of the mean on either route
        single = ldfa_module.oja_step(P, delta.float(), normalize, dim=1)
        torch.testing.assert_close(single, by_route[route].float(), rtol=1e-3, atol=1e-4)
        # the units along any dim, counted from either end
        moved = ldfa_module.oja_step(P.double(), delta.movedim(1, 2), normalize, dim=-2)
        torch.testing.assert_close(moved, by_route[route])
    torch.testing.assert_close(by_route["moments"], by_route["rows"])
    samples = delta.movedim(1, -1).reshape(-1, 6)
    torch.testing.assert_close(by_route["rows"], -oja_by_hand(P.double(), samples, normalize))
