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
