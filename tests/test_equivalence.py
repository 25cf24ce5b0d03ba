"""With their feedback set to the forward weights, the rules compute exactly BP's gradients."""

import copy

import pytest
import torch
from torch import nn

import alignlab
from helpers import assert_grads_equal, run_backward, with_feedback_equal_to_weights

torch.manual_seed(0)

CONVS = {
    "conv1d stride 2": (nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 11)),
    "conv1d same even dilated": (nn.Conv1d(3, 4, 2, padding="same", dilation=3), (2, 3, 10)),
    "conv2d no bias": (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), (2, 4, 9, 9)),
    "conv2d same dilated": (nn.Conv2d(4, 8, 3, padding="same", dilation=2), (2, 4, 8, 8)),
    "conv2d same even kernel": (nn.Conv2d(4, 8, 4, padding="same"), (2, 4, 7, 7)),
    "conv2d valid": (nn.Conv2d(4, 6, 3, padding="valid"), (2, 4, 7, 7)),
    "conv2d grouped": (nn.Conv2d(4, 8, 3, groups=2, padding=1), (2, 4, 6, 6)),
    "conv2d depthwise": (nn.Conv2d(4, 4, 3, groups=4, stride=2), (2, 4, 9, 9)),
    "conv2d anisotropic": (nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1)), (2, 4, 9, 11)),
    "conv2d reflect": (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (2, 4, 6, 6)),
    "conv2d circular": (nn.Conv2d(4, 6, 3, padding=2, padding_mode="circular", dilation=2), (2, 4, 6, 6)),
    "conv2d replicate": (nn.Conv2d(4, 6, 3, padding=1, padding_mode="replicate"), (2, 4, 6, 6)),
    "conv3d": (nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1), (2, 2, 5, 6, 6)),
    "conv3d grouped same": (nn.Conv3d(4, 4, 3, padding="same", groups=2), (1, 4, 4, 5, 5)),
}


@pytest.mark.parametrize("case", CONVS, ids=list(CONVS))
def test_conv_fa_with_b_equal_w_is_bp(case):
    layer, shape = CONVS[case]
    x = torch.randn(shape)
    fa = with_feedback_equal_to_weights(nn.Sequential(layer))
    assert type(fa[0]).__name__.startswith("FeedbackConv")
    assert_grads_equal(run_backward(fa, x), run_backward(nn.Sequential(layer), x))


@pytest.mark.parametrize("shape", [(5, 6), (3, 4, 6), (2, 3, 4, 6), (6,)], ids=["2d", "3d", "4d", "1d"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_fa_with_b_equal_w_is_bp(shape, bias):
    ref = nn.Sequential(nn.Linear(6, 7, bias=bias), nn.Tanh(), nn.Linear(7, 3, bias=bias))
    x = torch.randn(shape)
    assert_grads_equal(run_backward(with_feedback_equal_to_weights(ref), x), run_backward(ref, x))


def test_fa_feedback_differs_from_bp_by_default():
    ref = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(4, 6)
    _, gx_fa, _ = run_backward(alignlab.convert(copy.deepcopy(ref), rule="fa"), x)
    _, gx_bp, _ = run_backward(ref, x)
    assert not torch.allclose(gx_fa, gx_bp, atol=1e-3)


def test_bp_rule_equals_original_model():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 25, 5))
    bp = alignlab.convert(copy.deepcopy(ref), rule="bp")
    x = torch.randn(3, 3, 5, 5)
    assert_grads_equal(run_backward(bp, x), run_backward(ref, x), atol=0, rtol=0)


def test_dfa_one_hidden_layer_with_b_equal_w_out_is_bp():
    ref = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    dfa = alignlab.convert(copy.deepcopy(ref), rule="dfa")
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    with torch.no_grad():  # B (outputs × inputs of the layer), drawn from its seed, set to W
        dfa[2].feedback.weights(3, 7, like=dfa[2].weight).copy_(dfa[2].weight)
    for model in (dfa, ref):
        nn.functional.cross_entropy(model(x), y).backward()
    for (name, p), q in zip(dfa.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_dfa_dense_conv_input_gradient_is_projected_output_error():
    model = alignlab.convert(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 16, 4)), rule="dfa",
                             project="dense")
    x = torch.randn(5, 2, 6, 6, requires_grad=True)
    with alignlab.nn.exact():
        h = model[0](x)  # hidden activity, for the hand computation
    out = model(x)
    e = torch.randn(5, 4)
    out.backward(e)
    B = model[0].feedback.B
    assert B.shape == (4, 2 * 6 * 6)
    torch.testing.assert_close(x.grad, (e @ B).reshape(x.shape))
    # the weight gradient is still the true local one: δ of the conv output is eᵀB_2 (the
    # Linear's input gradient), reshaped
    delta = (e @ model[2].feedback.B).reshape(h.shape)
    true_w = torch.autograd.grad(h, model[0].weight, delta)[0]
    torch.testing.assert_close(model[0].weight.grad, true_w)


def test_dfa_two_forwards_one_backward_keep_their_own_errors():
    torch.manual_seed(1)
    model = alignlab.convert(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                                           nn.Linear(6, 3)), rule="dfa")
    x1, x2 = torch.randn(4, 5), torch.randn(4, 5)
    y1, y2 = torch.randint(0, 3, (4,)), torch.randint(0, 3, (4,))
    loss = nn.functional.cross_entropy
    loss(model(x1), y1).backward()
    loss(model(x2), y2).backward()
    separate = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (loss(model(x1), y1) + loss(model(x2), y2)).backward()
    for a, b in zip(model.parameters(), separate):
        torch.testing.assert_close(a.grad, b)


def test_exact_mode_gives_bp_gradients_for_any_rule():
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4))
    x = torch.randn(3, 2, 6, 6)
    for rule in alignlab.rules.available():
        model = alignlab.convert(copy.deepcopy(ref), rule=rule)
        model(x)  # dfa builds B on its first pass
        with alignlab.nn.exact():
            got = run_backward(model, x)
        assert_grads_equal(got, run_backward(ref, x))


@pytest.mark.parametrize("dims, groups", [(2, 1), (2, 2), (1, 1), (1, 2)])
def test_locally_connected_input_grad_with_one_kernel_everywhere_is_the_conv_backward(dims, groups):
    from alignlab.nn.functional import ConvCall, locally_connected_input_grad

    torch.manual_seed(0)
    W = torch.randn(6, 4 // groups, *(3,) * dims)
    x = torch.randn(2, 4, *(9,) * dims, requires_grad=True)
    conv = nn.functional.conv2d if dims == 2 else nn.functional.conv1d
    stride, pad, dil = (2,) * dims, (1,) * dims, (2,) * dims
    y = conv(x, W, None, stride, pad, dil, groups)
    g = torch.randn_like(y)
    y.backward(g)
    kernels = W.reshape(6, -1).expand(y[0, 0].numel(), 6, -1)
    got = locally_connected_input_grad(g, kernels, x.shape, ConvCall(y.shape[2:], W.shape[2:], stride, pad, dil, groups))
    torch.testing.assert_close(got, x.grad)


def test_locally_connected_input_grad_by_hand():
    """Conv1d, 1 → 1 channel, kernel 2, stride 1, no padding: x (5) → y (4); position l's
    kernel (a_l, b_l) sends g_l back as a_l g_l to x_l and b_l g_l to x_{l+1}."""
    from alignlab.nn.functional import ConvCall, locally_connected_input_grad

    kernels = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]], [[7.0, 8.0]]])  # (L=4, C_out=1, 2)
    g = torch.tensor([[[1.0, 10.0, 100.0, 1000.0]]])
    got = locally_connected_input_grad(g, kernels, torch.Size((1, 1, 5)), ConvCall((4,), (2,), (1,), (0,), (1,), 1))
    want = torch.tensor([[[1 * 1, 2 * 1 + 3 * 10, 4 * 10 + 5 * 100, 6 * 100 + 7 * 1000, 8 * 1000]]], dtype=torch.float32)
    torch.testing.assert_close(got, want)
