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
