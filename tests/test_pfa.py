"""Product Feedback Alignment: δ_in = Rᵀ Bᵀ δ_out, B fixed, ∇R = Bᵀ ∇W, so B·R → W."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignlab
from alignlab.diagnostics import weight_alignment
from alignlab.optim import build_optimizer
from alignlab.nn import product as product_module
from alignlab.nn.product import product
from alignlab.rules.pfa import PFA
from alignlab.testing import TinyTransformer as Classifier
from alignlab.testing import bars_task, mlp, small_cnn
from helpers import angle, assert_grads_equal, run_backward


def pfa(model, **options):
    return alignlab.convert(model, rule="pfa", **options)


def blocks(B, groups):
    """B (C_out, m) as its per-group blocks (groups, C_out/groups, m)."""
    return B.reshape(groups, B.shape[0] // groups, B.shape[1])


# --- registry and options ------------------------------------------------------------------


def test_registered_with_the_papers_defaults():
    assert "pfa" in alignlab.rules.available()
    rule = alignlab.rules.get("pfa")
    assert isinstance(rule, PFA)
    assert rule.options() == {"k": 10, "init_b": "random", "init_r": "xavier", "b_conn_density": 1.0}


@pytest.mark.parametrize("options, message", [
    ({"k": 0}, r"rule 'pfa': k=0 is not valid; give an integer >= 1"),
    ({"k": 2.5}, r"rule 'pfa': k=2.5 is not valid"),
    ({"k": True}, r"rule 'pfa': k=True is not valid"),
    ({"init_b": "ortho"}, r"init_b='ortho' is not valid; choose one of 'random', 'orthogonal', 'identity'"),
    ({"init_r": "normal"}, r"init_r='normal' is not valid; choose one of 'kaiming', 'xavier'"),
    ({"init_b": "identity"}, r"init_b='identity' needs k=1 \(B = I\); got k=10"),
    ({"init": "xavier"}, r"unknown option 'init' for rule 'pfa'; valid options: k, init_b, init_r, b_conn_density"),
    ({"b_conn_density": 0}, r"rule 'pfa': b_conn_density=0 is not valid; give a number in \(0, 1\]"),
    ({"b_conn_density": 1.5}, r"b_conn_density=1.5 is not valid"),
    ({"b_conn_density": -0.1}, r"b_conn_density=-0.1 is not valid"),
    ({"b_conn_density": float("nan")}, r"b_conn_density=nan is not valid"),
    ({"b_conn_density": True}, r"b_conn_density=True is not valid"),
    ({"b_conn_density": "0.5"}, r"b_conn_density='0.5' is not valid"),
    ({"b_conn_density": 0.5, "init_b": "orthogonal"},
     r"b_conn_density=0.5 needs init_b='random' \(a sparse B is neither I nor orthonormal\); got init_b='orthogonal'"),
    ({"b_conn_density": 0.5, "k": 1, "init_b": "identity"}, r"b_conn_density=0.5 needs init_b='random'"),
])
def test_bad_options_are_one_line_value_errors(options, message):
    with pytest.raises(ValueError, match=message) as info:
        pfa(nn.Linear(2, 2), **options)
    assert "\n" not in str(info.value)


# --- what is built -------------------------------------------------------------------------


def test_linear_feedback_shapes_and_random_init():
    torch.manual_seed(0)
    layer = pfa(nn.Sequential(nn.Linear(40, 30)))[0]
    fb = layer.feedback
    B, R = fb.B, fb.R
    assert B.shape == (30, 300) and R.shape == (300, 40)
    assert "feedback.B" in dict(layer.named_buffers()) and not B.requires_grad
    assert isinstance(R, nn.Parameter) and dict(layer.named_parameters())["feedback.R"] is R
    bound_b = math.sqrt(3 / 300)  # authors: xavier_uniform(gain=√((1+1/k)/2)) = U(±√(3/(k·N_out)))
    assert bound_b * 0.98 < B.abs().max() <= bound_b
    BBt = B @ B.T  # E[B Bᵀ] = I
    assert abs(BBt.diagonal().mean() - 1) < 0.05 and (BBt - torch.eye(30)).abs().max() < 0.4
    bound_r = math.sqrt(6 / (300 + 40))  # xavier on R (k·N_out × N_in)
    assert bound_r * 0.98 < R.abs().max() <= bound_r
    torch.testing.assert_close(fb.matrix(layer.weight), B @ R)
    assert 80 < angle(fb.matrix(layer.weight).detach(), layer.weight.detach()) < 100  # starts unaligned
    kaiming = pfa(nn.Sequential(nn.Linear(40, 30)), init_r="kaiming")[0].feedback.R
    assert 0.98 / math.sqrt(40) < kaiming.abs().max() <= 1 / math.sqrt(40)


def test_orthogonal_and_identity_b():
    torch.manual_seed(0)
    fb = pfa(nn.Sequential(nn.Linear(7, 5)), init_b="orthogonal")[0].feedback
    assert fb.B.shape == (5, 50)
    torch.testing.assert_close(fb.B @ fb.B.T, torch.eye(5), atol=1e-6, rtol=0)  # orthonormal rows
    layer = pfa(nn.Sequential(nn.Linear(7, 5)), k=1, init_b="identity")[0]
    assert torch.equal(layer.feedback.B, torch.eye(5))
    assert torch.equal(layer.feedback.matrix(layer.weight), layer.feedback.R)  # B·R = R


def test_grouped_conv_mixes_within_each_group():
    torch.manual_seed(0)
    model = pfa(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 3, groups=8), nn.Conv1d(8, 6, 1)),
                init_b="orthogonal")
    (l0, l1, l2) = model
    assert (l0.feedback.B.shape, l0.feedback.R.shape, l0.feedback.groups) == ((8, 40), (80, 2, 3, 3), 2)
    assert (l1.feedback.B.shape, l1.feedback.R.shape, l1.feedback.groups) == ((8, 10), (80, 1, 3, 3), 8)
    assert (l2.feedback.B.shape, l2.feedback.R.shape, l2.feedback.groups) == ((6, 60), (60, 8, 1), 1)
    for layer in model:
        g = layer.feedback.groups
        Bg = blocks(layer.feedback.B, g)
        torch.testing.assert_close(Bg @ Bg.mT, torch.eye(Bg.shape[1]).expand(g, -1, -1), atol=1e-6, rtol=0)
        assert layer.feedback.matrix(layer.weight).shape == layer.weight.shape
    # B·R is the kernel of "R (grouped conv, k·C_out channels), then B (grouped 1×1 conv)"
    x = torch.randn(2, 4, 7, 7)
    fb = l0.feedback
    two_stage = F.conv2d(F.conv2d(x, fb.R, groups=2), fb.B[..., None, None], groups=2)
    torch.testing.assert_close(F.conv2d(x, fb.matrix(l0.weight), groups=2), two_stage, atol=1e-5, rtol=1e-5)


def test_b_mixes_within_the_groups_it_is_given():
    weight = nn.Conv2d(4, 8, 3, groups=2).weight
    assert PFA().feedback(weight, groups=2).B.shape == (8, 40)  # convert passes the layer's groups
    assert PFA().feedback(weight).B.shape == (8, 80)


# --- the equations -------------------------------------------------------------------------


def test_linear_r_gradient_is_bt_grad_w_and_input_gradient_goes_through_b_then_r():
    torch.manual_seed(0)
    layer = pfa(nn.Sequential(nn.Linear(6, 5)))[0]
    x = torch.randn(2, 3, 6, requires_grad=True)  # leading dims
    g = torch.randn(2, 3, 5)
    layer(x).backward(g)
    B, R = layer.feedback.B, layer.feedback.R.detach()
    grad_w = g.reshape(-1, 5).T @ x.detach().reshape(-1, 6)
    torch.testing.assert_close(layer.weight.grad, grad_w)  # W's update stays the true local one
    torch.testing.assert_close(layer.feedback.R.grad, B.T @ layer.weight.grad, atol=1e-6, rtol=1e-6)  # ∇R = Bᵀ∇W
    torch.testing.assert_close(x.grad, g @ (B @ R), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x.grad, (g @ B) @ R, atol=1e-6, rtol=1e-5)  # δ through B, then R
    assert not torch.allclose(x.grad, g @ layer.weight.detach(), atol=1e-2)  # not BP


@pytest.mark.parametrize("route", ["factored", "dense"])
@pytest.mark.parametrize("shape", [(3, 6), (2, 3, 6)])
def test_linear_gradients_are_the_same_on_both_routes(shape, route, monkeypatch):
    """Factored: grad_x = (δB)R and ∇R = (δB)ᵀx, B·R never formed; dense: δ(B·R), ∇R = Bᵀ∇W."""
    monkeypatch.setattr(product_module, "FORCED", route)
    torch.manual_seed(0)
    layer = pfa(nn.Sequential(nn.Linear(6, 40)))[0]
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape[:-1], 40)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "LinearProductFnBackward"
    y.backward(g)
    B, R = layer.feedback.B, layer.feedback.R.detach()
    grad_w = g.reshape(-1, 40).T @ x.detach().reshape(-1, 6)
    torch.testing.assert_close(layer.weight.grad, grad_w)
    torch.testing.assert_close(layer.bias.grad, g.reshape(-1, 40).sum(0))
    torch.testing.assert_close(layer.feedback.R.grad, B.T @ grad_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, g @ (B @ R), atol=1e-5, rtol=1e-5)


CONVS = {
    "conv1d stride": (nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 11)),
    "conv2d grouped dilated": (nn.Conv2d(4, 6, 3, groups=2, padding=2, dilation=2), (2, 4, 7, 7)),
    "conv2d depthwise stride": (nn.Conv2d(4, 4, 3, groups=4, stride=2), (2, 4, 9, 9)),
    "conv3d": (nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1), (1, 2, 4, 6, 6)),
}


@pytest.mark.parametrize("route", ["factored", "dense"])
@pytest.mark.parametrize("case", CONVS, ids=list(CONVS))
def test_conv_r_gradient_and_input_gradient(case, route, monkeypatch):
    """Both routes (grouped convs always take the dense one) give the same gradients."""
    monkeypatch.setattr(product_module, "FORCED", route)
    torch.manual_seed(0)
    ref, shape = CONVS[case]
    layer = pfa(nn.Sequential(copy.deepcopy(ref)), k=3)[0]
    x = torch.randn(shape, requires_grad=True)
    out = layer(x)
    g = torch.randn(out.shape)
    out.backward(g)
    fb, groups = layer.feedback, ref.groups
    B, R = fb.B, fb.R.detach()
    conv = getattr(F, f"conv{x.dim() - 2}d")
    params = dict(stride=ref.stride, padding=ref.padding, dilation=ref.dilation, groups=groups)
    # ∇R = Bᵀ ∇W, per group
    grad_w = layer.weight.grad.reshape(groups, ref.out_channels // groups, -1)
    expected = (blocks(B, groups).mT @ grad_w).reshape(R.shape)
    torch.testing.assert_close(fb.R.grad, expected, atol=1e-6, rtol=1e-5)
    # input gradient: the transposed conv with kernel B·R ...
    x1 = x.detach().clone().requires_grad_(True)
    conv(x1, product(B, R), **params).backward(g)
    torch.testing.assert_close(x.grad, x1.grad, atol=1e-5, rtol=1e-5)
    # ... which is δ sent through B (transposed grouped 1×1 conv), then through R
    x2 = x.detach().clone().requires_grad_(True)
    ones = (1,) * (x.dim() - 2)
    conv(conv(x2, R, **params), B.reshape(*B.shape, *ones), groups=groups).backward(g)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def with_b_r_equal_to_w(model, **options):
    """``model`` converted to pfa with B·R set to every forward weight."""
    converted = pfa(copy.deepcopy(model), **options)
    with torch.no_grad():
        for _, layer, fb in alignlab.converted_layers(converted):
            w = layer.in_proj_weight if isinstance(layer, nn.MultiheadAttention) else layer.weight
            g = fb.groups
            Bg = blocks(fb.B, g)  # orthonormal rows: B Bᵀ W = W
            fb.R.copy_((Bg.mT @ w.reshape(g, w.shape[0] // g, -1)).reshape(fb.R.shape))
            torch.testing.assert_close(fb.matrix(w), w, atol=1e-6, rtol=1e-5)
    return converted


def grouped_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, groups=4, stride=2),
                         nn.Tanh(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8, 5))


@pytest.mark.parametrize("options", [{"k": 1, "init_b": "identity"}, {"k": 10, "init_b": "orthogonal"}],
                         ids=["identity k=1", "orthogonal k=10"])
def test_with_b_r_equal_to_w_is_bp(options):
    torch.manual_seed(0)
    for ref, x in ((grouped_cnn(), torch.randn(2, 3, 8, 8)), (Classifier(), torch.randn(3, 5, 16))):
        assert_grads_equal(run_backward(with_b_r_equal_to_w(ref, **options), x), run_backward(ref, x))
    ref = mlp()
    exact = with_b_r_equal_to_w(ref, k=1, init_b="identity")  # B = I, R = W: bit for bit
    x = torch.randn(4, 10)
    assert_grads_equal(run_backward(exact, x), run_backward(ref, x), atol=0, rtol=0)


@pytest.mark.parametrize("init_b", ["random", "orthogonal"])
def test_sgd_step_with_weight_decay_moves_br_towards_w(init_b):
    """W − B·R ← (1 − ηλ)(W − B·R) − η(I − B Bᵀ)∇W: exactly (1 − ηλ) when B Bᵀ = I."""
    torch.manual_seed(0)
    model = pfa(mlp(), init_b=init_b)
    lr, wd = 0.05, 0.1
    opt = build_optimizer(model, "sgd", lr, weight_decay=wd, momentum=0.0)
    layers = [(layer, fb) for _, layer, fb in alignlab.converted_layers(model)]
    for _ in range(2):
        gaps = [(layer.weight - fb.matrix(layer.weight)).detach() for layer, fb in layers]
        opt.zero_grad()
        model(torch.randn(16, 10)).pow(2).mean().backward()
        grads = [layer.weight.grad.clone() for layer, _ in layers]
        opt.step()
        for (layer, fb), gap, grad_w in zip(layers, gaps, grads):
            new_gap = (layer.weight - fb.matrix(layer.weight)).detach()
            eye = torch.eye(fb.B.shape[0])
            expected = (1 - lr * wd) * gap - lr * (eye - fb.B @ fb.B.T) @ grad_w
            torch.testing.assert_close(new_gap, expected, atol=1e-6, rtol=1e-5)
            if init_b == "orthogonal":
                torch.testing.assert_close(new_gap, (1 - lr * wd) * gap, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("density, shrink", [(1.0, 0.4), (0.5, 0.7)])  # sparse B aligns slower: ~30–55°
def test_angle_between_br_and_w_falls_during_training(density, shrink):
    torch.manual_seed(0)
    model = pfa(mlp(), b_conn_density=density)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-2)  # the authors' MNIST λ
    x, y = torch.randn(256, 10), torch.randint(0, 4, (256,))
    start = weight_alignment(model)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    end = weight_alignment(model)
    for name, layer, fb in alignlab.converted_layers(model):  # the diagnostic measures ∠(B·(R ⊙ mask), W)
        R = fb.R.detach() * fb.R_mask if density < 1 else fb.R.detach()
        by_hand = angle(fb.B @ R, layer.weight.detach())
        assert abs(end[name]["angle"] - by_hand) < 1e-2, (name, end[name], by_hand)
    assert all(80 < s["angle"] < 100 for s in start.values()), start
    assert all(end[n]["angle"] < shrink * start[n]["angle"] for n in start), (start, end)


# --- sparse feedback: b_conn_density -------------------------------------------------------


def test_dense_default_draws_exactly_what_it_drew_before():
    """b_conn_density=1 (the default, or given as 1 or 1.0) draws nothing more: same B, R, keys."""
    built = []
    for options in ({}, {"b_conn_density": 1.0}, {"b_conn_density": 1}):
        torch.manual_seed(0)
        built.append(pfa(nn.Sequential(nn.Linear(9, 7), nn.Conv2d(7, 4, 3)), **options))
    for model in built[1:]:
        assert model.state_dict().keys() == built[0].state_dict().keys()
        for key, value in built[0].state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    assert not any("R_mask" in key for key in built[0].state_dict())
    assert all(fb.R_mask is None for _, _, fb in alignlab.converted_layers(built[0]))


def test_dense_default_leaves_the_rng_where_it_was():
    torch.manual_seed(0)
    pfa(nn.Sequential(nn.Linear(9, 7)))
    after_default = torch.rand(5)
    torch.manual_seed(0)
    pfa(nn.Sequential(nn.Linear(9, 7)), b_conn_density=1.0)
    assert torch.equal(torch.rand(5), after_default)


def test_sparse_b_and_r_keep_a_fraction_d_of_their_entries_and_b_is_rescaled():
    """The authors: B ~ xavier_uniform(gain=√((1+1/k)/(2d))) = U(±√(3/(d·k·N_out))), then
    B ⊙ (rand < d) and R ⊙ (rand < d), independent masks over every entry; R not rescaled."""
    torch.manual_seed(0)
    d, n_out, n_in, k = 0.2, 100, 80, 10
    layer = pfa(nn.Sequential(nn.Linear(n_in, n_out)), b_conn_density=d)[0]
    fb = layer.feedback
    B, R, mask = fb.B, fb.R.detach(), fb.R_mask
    assert B.shape == (n_out, k * n_out) and R.shape == (k * n_out, n_in)
    assert abs((B != 0).float().mean().item() - d) < 0.01  # 100 000 entries: σ ≈ 0.0013
    assert abs((R != 0).float().mean().item() - d) < 0.01  # 80 000 entries
    rows = (B != 0).float().mean(1)  # per entry, not a fixed count per row
    assert rows.min() < d - 0.02 and rows.max() > d + 0.02
    bound_b = math.sqrt(3 / (d * k * n_out))  # the kept entries, rescaled by 1/√d
    assert bound_b * 0.98 < B.abs().max() <= bound_b
    kept = B[B != 0]
    assert abs(kept.pow(2).mean().item() - bound_b ** 2 / 3) < 0.03 * bound_b ** 2 / 3
    BBt = B @ B.T  # E[B Bᵀ] = I still
    assert abs(BBt.diagonal().mean() - 1) < 0.03
    bound_r = math.sqrt(6 / (k * n_out + n_in))  # R kept as xavier drew it, no rescaling
    assert bound_r * 0.98 < R.abs().max() <= bound_r
    assert mask.dtype == torch.bool and torch.equal(mask, R != 0)
    assert dict(layer.named_buffers())["feedback.R_mask"] is mask and "feedback.R_mask" in layer.state_dict()
    torch.testing.assert_close(fb.matrix(layer.weight), B @ R)
    assert "R_mask=(1000, 80)" in repr(fb)


def test_sparse_conv_feedback_masks_every_entry_within_its_groups():
    torch.manual_seed(0)
    d = 0.3
    layer = pfa(nn.Sequential(nn.Conv2d(8, 16, 3, groups=2)), k=4, b_conn_density=d)[0]
    fb = layer.feedback
    assert fb.B.shape == (16, 32) and fb.R.shape == (64, 4, 3, 3) and fb.groups == 2
    assert abs((fb.B != 0).float().mean().item() - d) < 0.1
    assert abs((fb.R != 0).float().mean().item() - d) < 0.05  # kernel entries masked one by one
    assert torch.equal(fb.R_mask, fb.R.detach() != 0)
    assert fb.B.abs().max() <= math.sqrt(3 / (d * 32))
    x = torch.randn(2, 8, 6, 6)
    out = F.conv2d(x, fb.matrix(layer.weight), groups=2)
    two_stage = F.conv2d(F.conv2d(x, fb.R.detach(), groups=2), fb.B[..., None, None], groups=2)
    torch.testing.assert_close(out.detach(), two_stage, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("route", ["factored", "dense"])
@pytest.mark.parametrize("n_out", [40, 4])
def test_sparse_r_gets_masked_gradients_on_both_routes(n_out, route, monkeypatch):
    monkeypatch.setattr(product_module, "FORCED", route)
    torch.manual_seed(0)
    layer = pfa(nn.Sequential(nn.Linear(6, n_out)), b_conn_density=0.25)[0]
    fb = layer.feedback
    x = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, n_out)
    y = layer(x)
    y.backward(g)
    B, R, mask = fb.B, fb.R.detach(), fb.R_mask
    torch.testing.assert_close(layer.weight.grad, g.T @ x.detach())  # W's update: the true local one
    torch.testing.assert_close(fb.R.grad, mask * (B.T @ layer.weight.grad), atol=1e-5, rtol=1e-5)
    assert torch.equal(fb.R.grad[~mask], torch.zeros_like(fb.R.grad[~mask]))
    torch.testing.assert_close(x.grad, g @ (B @ R), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_missing_connections_stay_missing_while_training(optimizer):
    torch.manual_seed(0)
    model = pfa(small_cnn(), k=2, b_conn_density=0.3)
    layers = alignlab.converted_layers(model)
    before = {name: (fb.B.clone(), fb.R_mask.clone()) for name, _, fb in layers}
    opt = build_optimizer(model, optimizer, 1e-2, weight_decay=0.1, **({"momentum": 0.9} if optimizer == "sgd" else {}))
    x, y = bars_task(64)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for name, _, fb in layers:
        B, mask = before[name]
        assert torch.equal(fb.B, B) and torch.equal(fb.R_mask, mask)  # both fixed
        R = fb.R.detach()
        assert torch.equal(R[~mask], torch.zeros_like(R[~mask])) and (R[mask] != 0).all()


def test_sparse_feedback_state_dict_round_trip():
    torch.manual_seed(0)
    a = pfa(mlp(), b_conn_density=0.2)
    torch.manual_seed(1)
    b = pfa(mlp(), b_conn_density=0.2)
    b.load_state_dict(a.state_dict())  # the masks travel with the checkpoint
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    for (_, _, fa_), (_, _, fb_) in zip(alignlab.converted_layers(a), alignlab.converted_layers(b)):
        assert torch.equal(fa_.R_mask, fb_.R_mask) and torch.equal(fa_.B, fb_.B)
    assert all(saved[key].dtype == torch.bool for key in saved if key.endswith("R_mask"))


def test_sparse_feedback_resizes_with_the_same_density():
    torch.manual_seed(0)
    d, k = 0.2, 10
    layer = pfa(nn.Sequential(nn.Linear(30, 60)), b_conn_density=d)[0]
    old_B, old_R, old_mask = layer.feedback.B.clone(), layer.feedback.R.detach().clone(), layer.feedback.R_mask.clone()
    layer.weight = nn.Parameter(torch.randn(120, 40))
    layer.bias = nn.Parameter(torch.zeros(120))
    with pytest.warns(UserWarning, match="resized from \\(60, 30\\) to \\(120, 40\\)"):
        layer(torch.randn(200, 40)).sum().backward()
    fb = layer.feedback
    B, R, mask = fb.B, fb.R.detach(), fb.R_mask
    assert B.shape == (120, 1200) and R.shape == (1200, 40) and mask.shape == (1200, 40)
    assert torch.equal(B[:60, :600], old_B)  # old rows keep their units
    assert torch.equal(B[:60, 600:], torch.zeros(60, 600)) and torch.equal(B[60:, :600], torch.zeros(60, 600))
    new = B[60:, 600:]  # the new block: the same density and scale as at conversion
    assert abs((new != 0).float().mean().item() - d) < 0.015
    assert new.abs().max() <= math.sqrt(3 / (d * k * 60))
    assert torch.equal(mask[:600, :30], old_mask) and torch.equal(R[:600, :30], old_R)
    assert abs(mask[600:].float().mean().item() - d) < 0.02 and abs(mask[:600, 30:].float().mean().item() - d) < 0.04
    assert torch.equal(mask, R != 0)
    assert torch.equal(fb.R.grad[~mask], torch.zeros_like(fb.R.grad[~mask]))
