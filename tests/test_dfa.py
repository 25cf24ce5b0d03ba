"""dfa's projections of the output error, by hand on tiny tensors."""

import pytest
import torch
from torch import nn

import alignlab


def _model(project):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 9, 4))
    return alignlab.convert(model, "dfa", project=project)


def _input_grad(model, x, g):
    x = x.clone().requires_grad_(True)
    model(x).backward(g)
    return x.grad


def test_kernel_projection_is_biotorchs_conv_dfa_by_hand():
    """grad_x[n, d, i, j] = Σ_c,p,q,a,b ē[n, c] B[c, d, a, b]/√9 over output positions (p, q) and
    taps (a, b) with i = 2p − 1 + a, j = 2q − 1 + b (stride 2, padding 1)."""
    model = _model("kernel")
    x, g = torch.randn(2, 2, 5, 5), torch.randn(2, 4)
    got = _input_grad(model, x, g)
    B = model[0].feedback.B.view(4, 2, 3, 3) / 3
    want = torch.zeros(2, 2, 5, 5)
    for p in range(3):
        for q in range(3):
            for a in range(3):
                for b in range(3):
                    i, j = 2 * p - 1 + a, 2 * q - 1 + b
                    if 0 <= i < 5 and 0 <= j < 5:
                        want[:, :, i, j] += g @ B[:, :, a, b]
    torch.testing.assert_close(got, want)
    bound = 1 / 4 ** 0.5  # B ~ U(±scale/√C), C = 4 outputs
    assert model[0].feedback.B.shape == (4, 2 * 9) and model[0].feedback.B.abs().max() <= bound


def test_broadcast_sends_the_same_projection_to_every_position():
    model = _model("broadcast")
    x, g = torch.randn(2, 2, 5, 5), torch.randn(2, 4)
    got = _input_grad(model, x, g)
    want = (g @ model[0].feedback.B).view(2, 2, 1, 1).expand(2, 2, 5, 5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("project", ["broadcast", "dense", "kernel"])
def test_every_projection_trains_a_cnn(project):
    from alignlab.testing import bars_task, small_cnn, train_and_test

    torch.manual_seed(0)
    acc = train_and_test(alignlab.convert(small_cnn(), "dfa", project=project), bars_task)
    assert acc > 0.8, acc  # chance 0.25
