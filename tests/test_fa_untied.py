"""fa's untied conv feedback: an independent random kernel at every output position."""

import copy

import pytest
import torch
from torch import nn

import alignlab
from alignlab.testing import assert_same_gradients, bars_task, check_rule, gradients, small_cnn

UNTIED = {"conv_feedback": "untied"}


def _untied(model):
    return alignlab.convert(copy.deepcopy(model), "fa", **UNTIED)


def test_every_positions_kernel_set_to_w_gives_bp():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1, groups=1), nn.ReLU(),
                        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 16, 3))
    model = _untied(ref)
    x = bars_task(3)[0]
    gradients(model, x)  # the first backward draws the kernels
    with torch.no_grad():
        for _, layer, fb in alignlab.converted_layers(model):
            if fb.own_input_grad:
                fb.kernels.copy_(layer.weight.reshape(layer.weight.shape[0], -1).expand_as(fb.kernels))
            else:
                fb.B.copy_(layer.weight)
    assert_same_gradients(gradients(model, x), gradients(ref, x))


def test_kernels_differ_by_position_and_follow_the_seed():
    torch.manual_seed(0)
    model = _untied(small_cnn())
    gradients(model, bars_task(2)[0])
    K = model[0].feedback.kernels
    assert K.shape == (64, 8, 9)  # 8×8 output positions, 8 output channels, 1·3·3 inputs
    assert not torch.equal(K[0], K[1])
    bound = 1 / 9 ** 0.5  # each kernel drawn as fa's B: U(±1/√fan_in)
    assert K.abs().max() <= bound
    other = _untied(small_cnn())
    other.load_state_dict(model.state_dict())  # the seed travels; the kernels are rebuilt from it
    gradients(other, bars_task(2)[0])
    assert torch.equal(other[0].feedback.kernels, K)


def test_untied_feedback_sends_each_positions_error_through_its_own_kernel():
    """Conv1d 1→1, kernel 2, input 3 → output 2: grad_x = (a₀g₀, b₀g₀ + a₁g₁, b₁g₁)."""
    model = alignlab.convert(nn.Sequential(nn.Conv1d(1, 1, 2, bias=False)), "fa", **UNTIED)
    x = torch.randn(1, 1, 3, requires_grad=True)
    g = torch.tensor([[[1.0, 10.0]]])
    model(x).backward(g)
    (a0, b0), (a1, b1) = model[0].feedback.kernels.view(2, 2).tolist()
    torch.testing.assert_close(x.grad, torch.tensor([[[a0, b0 + 10 * a1, 10 * b1]]]))


def test_untied_passes_the_contract_and_trains_a_cnn():
    results = check_rule(alignlab.rules.get("fa", **UNTIED), ["trains_cnn", "state_dict_round_trip", "bf16_autocast",
                                                            "compile", "diagnostics"])
    assert set(results.values()) == {"ok"}, results


@pytest.mark.parametrize("options, message", [
    ({"conv_feedback": "tied"}, "conv_feedback='tied' is not valid; choose one of 'shared', 'untied'"),
    ({"conv_feedback": "untied", "match_norm": True}, "conv_feedback='untied' works with match_norm=False"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        alignlab.rules.get("fa", **options)


def test_conv3d_is_refused_with_one_line():
    with pytest.raises(ValueError, match="supports Conv1d and Conv2d, not Conv3d"):
        alignlab.convert(nn.Sequential(nn.Conv3d(1, 2, 3)), "fa", **UNTIED)
