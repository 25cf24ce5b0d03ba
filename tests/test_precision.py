"""FA with B = W under autocast is as exact as BP (bf16 on CPU; CUDA when present).

Every rule's bf16 and torch.compile checks are contract checks (tests/test_contract.py)."""

import copy

import pytest
import torch
from torch import nn

import alignlab
from helpers import with_feedback_equal_to_weights


def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 16), nn.ReLU(), nn.Linear(16, 4))


def grads_under_autocast(model, x, device, dtype):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with torch.autocast(device, dtype=dtype):
        out = model(x)
    out.float().sum().backward()
    return out, x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_fa_with_b_equal_w_is_as_exact_as_bp_under_bf16_autocast(device):
    torch.manual_seed(0)
    ref = cnn().to(device)
    fa = with_feedback_equal_to_weights(ref)
    x = torch.randn(4, 3, 8, 8, device=device)
    out_a, gx_a, g_a = grads_under_autocast(fa, x, device, torch.bfloat16)
    out_b, gx_b, g_b = grads_under_autocast(ref, x, device, torch.bfloat16)
    exact = copy.deepcopy(ref)
    xx = x.clone().requires_grad_(True)
    exact(xx).sum().backward()  # fp32 BP
    assert out_a.dtype == torch.bfloat16
    torch.testing.assert_close(out_a, out_b)  # the forward pass is PyTorch's own
    assert gx_a.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g_a.values())
    pairs = [("input", gx_a, gx_b, xx.grad)] + [(n, g_a[n], g_b[n], p.grad) for n, p in exact.named_parameters()]
    for name, ours, torchs, true in pairs:
        err_ours, err_torch = (ours - true).abs().max(), (torchs - true).abs().max()
        assert err_ours <= 1.5 * err_torch + 2e-3 * true.abs().max(), (name, err_ours, err_torch)


def _steps(model, x, n):
    """n SGD steps, then a forward pass for the last W and another on the same W (no new draw)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(n):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    model(x), model(x)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", ["brsf", "wm"])
def test_draws_and_mirror_steps_count_changes_of_w_and_rewind_on_each_device(rule, device):
    # on each device (CUDA too, where the test "did W's bits change" reads the device): one draw
    # (brsf) or mirror step (wm) per change of W, none for a pass on the same W, and a checkpoint
    # loaded back into the same model (its counters rewound from outside) replays them
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule=rule).to(device)
    x = torch.randn(8, 3, 8, 8, device=device)
    start = {n: int(layer.feedback.step) for n, layer, _ in alignlab.converted_layers(model)}
    _steps(model, x, 3)
    checkpoint = copy.deepcopy(model.state_dict())
    after = _steps(model, x, 2)
    for name, layer, _ in alignlab.converted_layers(model):
        assert int(layer.feedback.step) == start[name] + 5, name
    model.load_state_dict(checkpoint)  # rewind: the counters are written from outside
    replayed = _steps(model, x, 2)
    for key, value in after.items():
        if value.is_floating_point():
            torch.testing.assert_close(replayed[key], value, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(replayed[key], value), key
