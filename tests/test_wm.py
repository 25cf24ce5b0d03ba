"""wm: B learns W's direction from the layer's response to noise (weight mirrors)."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignlab
from alignlab.diagnostics.alignment import angle
from alignlab.rules.base import STEP_MIX as _MIX
from alignlab.rules.wm import mirror_update
from alignlab.testing import mlp, small_cnn, bars_task, teacher_task


def fb(layer):
    return layer.feedback


def noise_by_hand(feedback, step):
    """ξ of mirror step ``step``, drawn as the docstring says: N(0, σ²) from a generator seeded
    by (seed + step·MIX) mod 2⁶³, shaped (groups, mirror_batch, fan_in/groups)."""
    g = torch.Generator().manual_seed((int(feedback.seed) + step * _MIX) % 2**63)
    d = math.prod(feedback.B.shape[1:])
    return feedback.noise_std * torch.randn(feedback.groups, feedback.mirror_batch, d, generator=g)


def nudge(layer):
    """Change W (as an optimizer step would)."""
    with torch.no_grad():
        layer.weight.add_(0.01)


# --- options ---------------------------------------------------------------------------------


def test_defaults():
    rule = alignlab.rules.get("wm")
    assert rule.options() == {"init": "kaiming", "mirror_lr": 0.05, "mirror_decay": 0.05, "noise_std": 1.0,
                              "mirror_batch": 64}
    assert rule.data_parallel_exact  # the mirror step depends on W alone, not on the batch


@pytest.mark.parametrize("option, value, message", [
    ("init", "normal", "init='normal' is not valid; choose one of 'kaiming', 'xavier'"),
    ("mirror_lr", -0.1, "mirror_lr=-0.1 is not valid; give a finite number >= 0"),
    ("mirror_lr", float("nan"), "mirror_lr=nan is not valid"),
    ("mirror_lr", True, "mirror_lr=True is not valid"),
    ("mirror_decay", 1.5, "mirror_decay=1.5 is not valid; give a finite number >= 0 and <= 1"),
    ("mirror_decay", -0.01, "mirror_decay=-0.01 is not valid"),
    ("noise_std", 0.0, "noise_std=0.0 is not valid; give a finite number > 0"),
    ("noise_std", float("inf"), "noise_std=inf is not valid"),
    ("noise_std", "1", "noise_std='1' is not valid"),
    ("mirror_batch", 0, "mirror_batch=0 is not valid; give a positive integer"),
    ("mirror_batch", 8.0, "mirror_batch=8.0 is not valid"),
    ("mirror_batch", True, "mirror_batch=True is not valid"),
])
def test_options_are_validated(option, value, message):
    with pytest.raises(ValueError, match=f"^rule 'wm': {message}".replace("(", r"\(").replace(")", r"\)")):
        alignlab.rules.get("wm", **{option: value})
    alignlab.rules.get("wm", mirror_lr=0, mirror_decay=0, noise_std=2, mirror_batch=1)  # the edges are valid


# --- the mirror step -------------------------------------------------------------------------


def test_mirror_update_by_hand():
    g = torch.Generator().manual_seed(7)
    B, W = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    xi = torch.randn(1, 4, 3, generator=g)
    lr, decay = 0.3, 0.1
    hebb = torch.zeros(2, 3, dtype=torch.float64)
    for x in xi[0].double():  # one sample at a time: y = W x, then the outer product y xᵀ
        y = W.double() @ x
        hebb += torch.outer(y, x)
    want = (1 - decay) * B.double() + lr * hebb / 4
    torch.testing.assert_close(mirror_update(B, W, xi, lr, decay).double(), want)


def test_mirror_update_per_group_of_a_conv_kernel():
    g = torch.Generator().manual_seed(3)
    B, W = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)  # 4 outputs, 2 groups
    xi = torch.randn(2, 5, 6, generator=g)
    got = mirror_update(B, W, xi, 1.0, 0.0)
    for k in range(2):  # group k: its two output rows see group k's noise only
        w = W[2 * k:2 * k + 2].reshape(2, 6)
        want = B[2 * k:2 * k + 2].reshape(2, 6) + (xi[k] @ w.T).T @ xi[k] / 5
        torch.testing.assert_close(got[2 * k:2 * k + 2].reshape(2, 6), want)


def test_a_step_is_the_rule_applied_to_the_layers_own_response_to_noise():
    """In the model, the step equals (1 − λ)B + η⟨y ξᵀ⟩ with y = F.linear(ξ, W): what the layer's
    forward computes on the noise, and nothing else of W."""
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(5, 3)), rule="wm", mirror_lr=0.2, mirror_decay=0.1,
                             noise_std=0.5, mirror_batch=7)[0]
    B0 = fb(layer).B.clone()
    layer(torch.randn(2, 5)).sum().backward()  # W as converted: no step
    assert torch.equal(fb(layer).B, B0) and int(fb(layer).step) == 0
    nudge(layer)
    layer(torch.randn(2, 5))
    xi = noise_by_hand(fb(layer), 0)[0]
    y = F.linear(xi, layer.weight.detach())  # the layer's response (its bias is zero-mean noise: left out)
    torch.testing.assert_close(fb(layer).B, 0.9 * B0 + 0.2 * y.T @ xi / 7)
    assert int(fb(layer).step) == 1


def test_a_conv_step_uses_the_convs_own_response_to_noise_patches():
    torch.manual_seed(0)
    conv = alignlab.convert(nn.Sequential(nn.Conv2d(4, 6, 3, groups=2)), rule="wm", mirror_batch=5)[0]
    B0 = fb(conv).B.clone()
    nudge(conv)
    conv(torch.randn(1, 4, 5, 5))
    xi = noise_by_hand(fb(conv), 0)  # (groups, n, C_in/groups·3·3)
    patches = xi.view(2, 5, 2, 3, 3).transpose(0, 1).reshape(5, 4, 3, 3)  # group k's noise on its channels
    y = F.conv2d(patches, conv.weight.detach(), groups=2).reshape(5, 2, 3).transpose(0, 1)  # (groups, n, 3)
    hebb = (y.mT @ xi / 5).reshape(6, 2, 3, 3)
    torch.testing.assert_close(fb(conv).B, 0.95 * B0 + 0.05 * hebb)


def test_one_step_per_change_of_w_whatever_the_forward_passes():
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="wm")
    x, y = teacher_task(32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = lambda: [int(fb(model[i]).step) for i in (0, 2, 4)]  # noqa: E731
    for _ in range(3):  # gradient accumulation: the same W, no step
        F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        model(x)
    assert steps() == [0, 0, 0]
    opt.step()
    with torch.no_grad():  # evaluation: no feedback is used, no step
        model(x)
    assert steps() == [0, 0, 0]
    B = [fb(model[i]).B.clone() for i in (0, 2, 4)]
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
    assert steps() == [1, 1, 1]
    assert all(not torch.equal(b, fb(model[i]).B) for b, i in zip(B, (0, 2, 4)))


def test_diagnostics_take_the_step_training_would_take():
    """A diagnostics pass after an optimizer step takes the mirror step the next training pass
    would have taken, with the same numbers: a measured run trains as an unmeasured one."""
    from alignlab.diagnostics.probe import measure

    torch.manual_seed(0)
    a = alignlab.convert(small_cnn(), rule="wm")
    b = copy.deepcopy(a)
    x, y = bars_task(16)
    for model in (a, b):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(3):
            if model is b:
                measure(model, F.cross_entropy, x, y)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


# --- B learns W ------------------------------------------------------------------------------


def test_b_aligns_with_w_while_an_mlp_trains():
    torch.manual_seed(0)
    model = alignlab.convert(mlp(), rule="wm")
    layers = [model[i] for i in (0, 2, 4)]
    start = [angle(fb(l).B, l.weight.detach()) for l in layers]
    assert all(75 < a < 105 for a in start), start  # random B: about orthogonal to W
    x, y = teacher_task(1024)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 1024, (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model(x[:1])  # the step for the last W
    end = [angle(fb(l).B, l.weight.detach()) for l in layers]
    ratio = [float(fb(l).B.norm() / l.weight.detach().norm()) for l in layers]
    assert all(a < 15 for a in end), end  # measured 5-7°
    assert all(0.8 < r < 1.2 for r in ratio), ratio  # η σ²/λ = 1: B → W, not only its direction
    xt, yt = teacher_task(512, seed=1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.9


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_b_of_a_grouped_conv_converges_to_w(groups):
    torch.manual_seed(0)
    conv = alignlab.convert(nn.Sequential(nn.Conv2d(4, 8, 3, groups=groups)), rule="wm", mirror_batch=256)[0]
    w = conv.weight.detach()
    assert angle(fb(conv).B, w) > 60
    for _ in range(150):
        fb(conv).mirror(w)
    assert angle(fb(conv).B, w) < 10
    assert 0.8 < float(fb(conv).B.norm() / w.norm()) < 1.2


# --- determinism, state, precision, compile, resize ------------------------------------------


def train_steps(model, steps, shards=1, seed=0, start=0):
    """SGD steps on bars; with ``shards`` > 1, each shard's gradient is computed apart and the
    average applied (what DDP's all-reduce gives each rank)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(start, start + steps):
        x, y = bars_task(16, seed=seed + step)
        grads = []
        for xs, ys in zip(x.chunk(shards), y.chunk(shards)):
            model.zero_grad()
            F.cross_entropy(model(xs), ys).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, *gs in zip(model.parameters(), *grads):
            p.grad = torch.stack(gs).mean(0)
        opt.step()
    model(bars_task(2)[0])  # the mirror step for the last W
    return model


def test_identically_seeded_replicas_make_identical_updates():
    """DDP-style: two replicas built from one seed, each on its own shard of every batch, with
    averaged gradients, hold bit-identical B, seed and step; another seed draws other noise."""
    def build(seed):
        torch.manual_seed(seed)
        return alignlab.convert(small_cnn(), rule="wm")

    a, b = build(0), build(0)
    grads_a, grads_b = [], []
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (a, b))
    for step in range(4):
        x, y = bars_task(16, seed=step)
        for model, (xs, ys), store in ((a, (x[:8], y[:8]), grads_a), (b, (x[8:], y[8:]), grads_b)):
            model.zero_grad()
            F.cross_entropy(model(xs), ys).backward()
            store[:] = [p.grad.clone() for p in model.parameters()]
        for pa, pb, ga, gb in zip(a.parameters(), b.parameters(), grads_a, grads_b):
            pa.grad = pb.grad = (ga + gb) / 2  # the all-reduce
        opt_a.step()
        opt_b.step()
    a(bars_task(2)[0])
    b(bars_task(2)[0])
    assert int(fb(a[0]).step) == 4
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    c, d = build(0), build(0)
    for _, _, feedback in alignlab.converted_layers(c):
        feedback.seed.add_(1)
    train_steps(c, 4)
    train_steps(d, 4)
    for i in (0, 2, 5):  # the same data and start, another seed: other noise, another B
        assert not torch.equal(fb(c[i]).B, fb(d[i]).B)


def test_state_dict_round_trip_resumes_the_same_mirror_steps():
    torch.manual_seed(0)
    full = train_steps(alignlab.convert(small_cnn(), rule="wm"), 6)
    torch.manual_seed(0)
    half = train_steps(alignlab.convert(small_cnn(), rule="wm"), 3)
    buffer = io.BytesIO()
    torch.save(half.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    resumed = alignlab.convert(small_cnn(), rule="wm")
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert [k for k in resumed.state_dict() if k.startswith("0.feedback.")] == [
        "0.feedback.B", "0.feedback.seed", "0.feedback.step", "0.feedback.noise_drawn_for"]
    resumed(bars_task(2)[0])  # the same W as saved: no extra step
    assert int(fb(resumed[0]).step) == 3
    train_steps(resumed, 3, start=3)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_bf16_autocast_steps_in_fp32():
    torch.manual_seed(0)
    a = alignlab.convert(small_cnn(), rule="wm")
    b = copy.deepcopy(a)
    x, y = bars_task(8)
    for model in (a, b):
        F.cross_entropy(model(x), y).backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a(x)
    b(x)
    assert out.dtype == torch.bfloat16
    for i in (0, 2, 5):
        assert fb(a[i]).B.dtype == torch.float32 and int(fb(a[i]).step) == 1
        assert torch.equal(fb(a[i]).B, fb(b[i]).B)  # the step itself is fp32, autocast or not


def test_compile_gives_eagers_updates_over_several_mirror_steps():
    torch.manual_seed(0)
    eager = alignlab.convert(small_cnn(), rule="wm")
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)  # no graph break
    x, y = bars_task(16)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, twin)]
    for _ in range(3):
        for call, opt in zip((eager, compiled), opts):
            opt.zero_grad()
            F.cross_entropy(call(x), y).backward()
            for name, p in (eager if call is eager else twin).named_parameters():
                assert p.grad is not None, name
            opt.step()
    assert int(fb(twin[0]).step) == 2
    for (name, a), b in zip(eager.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for _ in range(2):  # two passes on the last W (gradient accumulation): one step, in the graph too
        for call in (eager, compiled):
            F.cross_entropy(call(x), y).backward()
    assert [int(fb(twin[i]).step) for i in (0, 2, 5)] == [int(fb(eager[i]).step) for i in (0, 2, 5)] == [3] * 3
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value, msg=key)


def test_resize_keeps_b_and_mirrors_the_new_w():
    torch.manual_seed(0)
    layer = alignlab.convert(nn.Sequential(nn.Linear(4, 3)), rule="wm")[0]
    B0 = fb(layer).B.clone()
    layer.weight = nn.Parameter(torch.cat([layer.weight.detach(), torch.randn(2, 4)]))
    layer.bias = nn.Parameter(torch.zeros(5))
    layer(torch.randn(2, 4)).sum().backward()
    B = fb(layer).B
    assert B.shape == (5, 4) and int(fb(layer).step) == 1  # W changed: one step on the grown B
    assert layer.weight.grad.shape == (5, 4)
    xi = noise_by_hand(fb(layer), 0)[0]  # (64, 4)
    hebb = F.linear(xi, layer.weight.detach()).T @ xi / 64
    torch.testing.assert_close(B[:3], 0.95 * B0 + 0.05 * hebb[:3])  # the old rows kept, then mirrored
