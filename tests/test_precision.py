"""Feedback layers under autocast (bf16 on CPU; CUDA when present) and torch.compile."""

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


@pytest.mark.parametrize("rule", ["fa", "dfa", "usf", "brsf", "kp"])
def test_every_rule_steps_under_bf16_autocast(rule):
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule=rule)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.parameters())
    opt.step()


@pytest.mark.parametrize("rule", ["fa", "dfa", "brsf", "kp"])
def test_compiled_model_gives_the_same_gradients(rule):
    torch.manual_seed(0)
    eager = alignlab.convert(cnn(), rule=rule)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for model, call in ((eager, eager), (compiled_model, compiled)):
        nn.functional.cross_entropy(call(x), y).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
