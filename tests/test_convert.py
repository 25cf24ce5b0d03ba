"""convert() on models people bring, state dicts, and bad input."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import alignlab
from alignlab.testing import TinyTransformer as Classifier
from helpers import assert_grads_equal, run_backward, with_feedback_equal_to_weights


def test_issue_one_liner():
    m = alignlab.convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), rule="fa")
    assert isinstance(m[0], alignlab.nn.FeedbackLinear)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_bp_equals_original_and_fa_with_b_equal_w_is_bp(batch_first):
    torch.manual_seed(0)
    ref = Classifier(batch_first)
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    for kwargs in ({}, {"mask": mask}, {"padding": padding}):
        want = run_backward(ref, x, lambda t: ref(t, **kwargs))
        bp = alignlab.convert(copy.deepcopy(ref), rule="bp")
        assert_grads_equal(run_backward(bp, x, lambda t: bp(t, **kwargs)), want)
        fa = with_feedback_equal_to_weights(ref)
        assert_grads_equal(run_backward(fa, x, lambda t: fa(t, **kwargs)), want)


def test_transformer_attention_projections_are_converted():
    model = alignlab.convert(Classifier(), rule="fa")
    names = [n for n, _, _ in alignlab.converted_layers(model)]
    assert "encoder.layers.0.self_attn" in names  # the packed q/k/v projection
    assert "encoder.layers.0.self_attn.out_proj" in names
    assert "encoder.layers.1.linear2" in names and "head" in names
    assert len(names) == 2 * 4 + 1
    assert isinstance(model.encoder.layers[0].norm1, nn.LayerNorm)  # norms stay on BP


def test_attention_weights_and_cross_attention_match_torch():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, batch_first=True)
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    want_out, want_w = ref(q, kv, kv)
    for rule in ("bp", "fa"):
        mha = alignlab.convert(nn.Sequential(copy.deepcopy(ref)), rule=rule)[0]
        out, w = mha(q, kv, kv)
        torch.testing.assert_close(out, want_out)
        torch.testing.assert_close(w, want_w)
    # unbatched input and per-head weights
    want_out, want_w = ref(q[0], kv[0], kv[0], average_attn_weights=False)
    out, w = alignlab.convert(nn.Sequential(copy.deepcopy(ref)), rule="fa")[0](
        q[0], kv[0], kv[0], average_attn_weights=False)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(w, want_w)


def test_cross_attention_fa_with_b_equal_w_is_bp():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, batch_first=True)
    kv = torch.randn(2, 4, 8)
    fa = with_feedback_equal_to_weights(nn.Sequential(ref))[0]
    q = torch.randn(2, 3, 8)
    want = run_backward(ref, q, lambda t: ref(t, kv, kv, need_weights=False)[0])
    got = run_backward(fa, q, lambda t: fa(t, kv, kv, need_weights=False)[0])
    assert_grads_equal(got, want)


def test_unsupported_attention_stays_on_bp_and_is_named():
    model = nn.Sequential(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.warns(UserWarning, match=r"stay on BP under rule 'fa'.*0: kdim/vdim differ from embed_dim"):
        alignlab.convert(model, rule="fa")
    assert type(model[0]) is nn.MultiheadAttention
    assert type(model[0].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def test_grouped_and_depthwise_convs_convert():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                          nn.Conv2d(8, 16, 1))
    alignlab.convert(model, rule="usf")
    assert [type(m).__name__ for m in model if not isinstance(m, nn.ReLU)] == ["FeedbackConv2d"] * 3
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    model(x).sum().backward()
    assert x.grad.shape == x.shape
    assert model[2].feedback.matrix(model[2].weight).shape == (8, 1, 3, 3)


def test_nested_and_custom_modules_and_exclude():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 3, 3, padding=1)
            self.proj = nn.Linear(3, 3)

        def forward(self, x):
            return self.proj(self.conv(x).transpose(1, 2)).transpose(1, 2)

    model = nn.Sequential(Block(), nn.Sequential(Block(), nn.Sequential(nn.Flatten(), nn.Linear(12, 2))))
    alignlab.convert(model, rule="fa", exclude=["1.0", "*.proj"])
    names = [n for n, _, _ in alignlab.converted_layers(model)]
    assert names == ["0.conv", "1.1.1"]
    assert model(torch.randn(2, 3, 4)).shape == (2, 2)


def test_convert_again_swaps_the_rule_and_keeps_weights():
    model = nn.Sequential(nn.Linear(4, 3))
    w = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    alignlab.convert(model, rule="fa")
    alignlab.convert(model, rule="usf")
    assert alignlab.summary(model).splitlines()[1].split()[-1] == "usf"
    assert torch.equal(model[0].weight, w)
    assert opt.param_groups[0]["params"][0] is model[0].weight  # the optimizer still holds it


def test_summary_lists_converted_layers():
    model = alignlab.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)), rule="kp")
    lines = alignlab.summary(model).splitlines()
    assert lines[0].split() == ["layer", "type", "weight", "rule", "note"]
    assert lines[1].split() == ["0", "Conv2d", "2x1x3x3", "kp"]
    assert lines[2].split() == ["2", "Linear", "2x2", "kp"]


def test_feedback_tensors_are_in_the_state_dict():
    keys = alignlab.convert(nn.Sequential(nn.Linear(3, 3)), rule="frsf").state_dict().keys()
    assert set(keys) == {"0.weight", "0.bias", "0.feedback.R"}
    keys = alignlab.convert(nn.Sequential(nn.Linear(3, 3)), rule="kp").state_dict().keys()
    assert set(keys) == {"0.weight", "0.bias", "0.feedback.B"}


def test_original_checkpoint_loads_into_converted_model():
    ref = nn.Sequential(nn.Linear(3, 3))
    model = alignlab.convert(copy.deepcopy(ref), rule="fa")
    missing, unexpected = model.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ["0.feedback.B"] and unexpected == []


def test_bad_rule_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=f"unknown rule 'fb'; available rules: {', '.join(alignlab.rules.available())}$"):
        alignlab.convert(nn.Linear(2, 2), rule="fb")


def test_bad_options_and_values():
    with pytest.raises(ValueError, match=r"unknown option 'int' for rule 'fa'; valid options: init, match_norm"):
        alignlab.convert(nn.Linear(2, 2), rule="fa", int="xavier")
    with pytest.raises(ValueError, match=r"unknown option 'init' for rule 'bp'; valid options: \(none\)"):
        alignlab.convert(nn.Linear(2, 2), rule="bp", init="xavier")
    with pytest.raises(ValueError, match=r"init='normal' is not valid; choose one of 'kaiming', 'xavier'"):
        alignlab.convert(nn.Linear(2, 2), rule="kp", init="normal")
    with pytest.raises(ValueError, match=r"scale='big' is not valid"):
        alignlab.convert(nn.Linear(2, 2), rule="usf", scale="big")
    with pytest.raises(ValueError, match=r"scale=-1 is not valid"):
        alignlab.convert(nn.Linear(2, 2), rule="dfa", scale=-1)


def test_exclude_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"exclude pattern 'fc9' matches no module; module names: 0, 1"):
        alignlab.convert(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), rule="fa", exclude=["fc9"])


def test_dfa_outside_the_converted_forward_is_a_clear_error():
    model = alignlab.convert(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), rule="dfa")
    with pytest.raises(RuntimeError, match="ran outside a forward pass"):
        model[1](torch.randn(1, 2))
    with torch.no_grad():  # inference is plain PyTorch
        assert model[1](torch.randn(1, 2)).shape == (1, 2)


def test_torchvision_models_convert():
    tv = pytest.importorskip("torchvision")
    model = alignlab.convert(tv.models.resnet18(num_classes=10), rule="fa")
    layers = alignlab.converted_layers(model)
    assert len(layers) == 21  # 20 convs (3 of them 1×1 downsamples) and the fc head
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None


# ---- coverage: subclasses, parametrized weights, user kinds; nothing left on BP silently ----

class MyLinear(nn.Linear):
    """A subclass that keeps nn.Linear's forward."""


class OwnForward(nn.Linear):
    def forward(self, x):
        return x @ self.weight.T + self.bias


class Scaled(nn.Module):
    """A layer of the user's own: y = 2·x Wᵀ."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d_out, d_in) / d_in ** 0.5)

    def forward(self, x):
        return 2 * x @ self.w.T


def test_subclasses_convert_and_revert_to_their_own_class():
    model = nn.Sequential(MyLinear(4, 5), nn.ReLU(), MyLinear(5, 3))
    alignlab.convert(model, "fa")
    assert isinstance(model[0], MyLinear) and isinstance(model[0], alignlab.nn.FeedbackLinear)
    assert type(model[0]).__name__ == "FeedbackMyLinear"
    ref = nn.Sequential(MyLinear(4, 5), nn.ReLU(), MyLinear(5, 3))
    fa, x = with_feedback_equal_to_weights(ref), torch.randn(6, 4)
    assert_grads_equal(run_backward(fa, x), run_backward(ref, x))
    alignlab.revert(model)
    assert type(model[0]) is MyLinear and "0.feedback.B" not in model.state_dict()


def test_overridden_forward_stays_on_bp_and_is_named_until_registered():
    model = nn.Sequential(OwnForward(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.warns(UserWarning, match=r"1 module\(s\) holding linear-map weights stay on BP under rule 'fa'.*"
                                         r"0: OwnForward overrides Linear.forward.*register_layer\(OwnForward, like=Linear\)"):
        alignlab.convert(model, "fa")
    assert type(model[0]) is OwnForward
    assert "OwnForward overrides" in alignlab.summary(model)
    with pytest.raises(ValueError, match="stay on BP") as info:
        alignlab.convert(nn.Sequential(OwnForward(4, 5)), "fa", strict=True)
    assert "\n" not in str(info.value)
    alignlab.register_layer(OwnForward, like=nn.Linear)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alignlab.convert(model, "fa", strict=True)
    assert isinstance(model[0], OwnForward) and alignlab.nn.kinds.is_converted(model[0])


def test_unknown_layers_with_weights_are_named_and_excluding_them_silences_the_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.Bilinear(4, 4, 2), nn.Embedding(5, 4))
    with pytest.warns(UserWarning, match=r"1: Bilinear \(weight\) is no layer kind alignlab converts"):
        alignlab.convert(model, "fa")  # the embedding is a lookup: not named
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alignlab.convert(model, "fa", exclude=["1"])


def test_register_layer_with_a_forward_of_its_own():
    alignlab.register_layer(Scaled, forward=lambda m, x: 2 * alignlab.nn.feedback_linear(x, m.w, None, m.feedback),
                            weight="w")
    torch.manual_seed(0)
    ref = nn.Sequential(Scaled(4, 6), nn.Tanh(), Scaled(6, 3))
    fa = with_feedback_equal_to_weights(ref)
    assert [n for n, _, _ in alignlab.converted_layers(fa)] == ["0", "2"]
    x = torch.randn(5, 4)
    assert_grads_equal(run_backward(fa, x), run_backward(ref, x))
    with pytest.raises(ValueError, match="give exactly one of like="):
        alignlab.register_layer(Scaled)
    with pytest.raises(ValueError, match=r"'Scaled' must subclass like="):
        alignlab.register_layer(Scaled, like=nn.Linear)


@pytest.mark.parametrize("parametrization", ["weight_norm", "spectral_norm"])
def test_parametrized_weights_convert_and_their_gradient_flows_through(parametrization):
    wrap = getattr(nn.utils.parametrizations, parametrization)
    torch.manual_seed(0)
    ref = nn.Sequential(wrap(nn.Linear(4, 6)), nn.Tanh(), wrap(nn.Conv1d(6, 3, 1)))
    ref.eval() if parametrization == "spectral_norm" else None  # no power-iteration step between passes
    fa = with_feedback_equal_to_weights(ref)
    assert len(alignlab.converted_layers(fa)) == 2
    x = torch.randn(5, 1, 4)
    call = lambda m: (lambda t: m[2](m[1](m[0](t)).transpose(1, 2)))  # noqa: E731
    got, want = run_backward(fa, x, call(fa)), run_backward(ref, x, call(ref))
    assert_grads_equal(got, want)
    assert any("original" in name for name in got[2])  # the parametrization's own parameters learn


def test_bp_equals_original_on_a_subclass_of_conv():
    class MyConv(nn.Conv2d):
        pass

    ref = nn.Sequential(MyConv(2, 3, 3, padding=1), nn.ReLU(), MyConv(3, 2, 3))
    bp = alignlab.convert(copy.deepcopy(ref), "bp")
    x = torch.randn(2, 2, 6, 6)
    assert_grads_equal(run_backward(bp, x), run_backward(ref, x), atol=0, rtol=0)


def test_whole_model_pickles_with_made_twins():
    """Twins made at run time (subclasses, attention's out_proj) pickle by their original class."""
    model = alignlab.convert(nn.Sequential(Classifier(), MyLinear(3, 2)), "fa")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded[1]) is type(model[1]) and type(loaded[1]).__name__ == "FeedbackMyLinear"
    x = torch.randn(2, 5, 16)
    assert_grads_equal(run_backward(loaded, x), run_backward(model, x), atol=0, rtol=0)
    alignlab.revert(loaded)
    assert type(loaded[0].encoder.layers[0].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


# ---- per-layer rules: a rule map ----------------------------------------------------------


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16, 8), nn.ReLU(), nn.Linear(8, 3))
        self.extra = nn.Linear(3, 3)

    def forward(self, x):
        h = self.features(x)
        t = h.flatten(2).transpose(1, 2)
        h = h + self.attn(t, t, t, need_weights=False)[0].transpose(1, 2).reshape(h.shape)
        return self.extra(self.classifier(h))


def _rules_of(model):
    return {name: feedback.rule_name for name, _, feedback in alignlab.converted_layers(model)}


def test_a_rule_map_gives_each_layer_the_rule_of_its_first_matching_pattern():
    torch.manual_seed(0)
    xavier_fa = alignlab.rules.get("fa", init="xavier")
    model = Mixed()
    with pytest.warns(UserWarning, match=r"1 module\(s\).*extra: no pattern of the rule map matches it$"):
        alignlab.convert(model, {"features.2": "dfa", "features.*": "kp", "classifier": xavier_fa, "attn": "usf"})
    assert _rules_of(model) == {"features.0": "kp", "features.2": "dfa", "attn": "usf", "attn.out_proj": "usf",
                                "classifier.1": "fa", "classifier.3": "fa"}
    assert model.classifier[1].feedback.init == "xavier"
    table = alignlab.summary(model)
    assert "extra" in table and "no pattern of the rule map matches it" in table
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.features[0].feedback.B.grad is not None  # kp learns its B


def test_a_rule_map_layer_computes_what_that_rule_alone_computes():
    """fa (B := W) on the convs and bp elsewhere is BP; each layer's feedback is its own rule's."""
    torch.manual_seed(0)
    ref = Mixed()
    mapped = alignlab.convert(copy.deepcopy(ref), {"features": "fa", "*": "bp"})
    with torch.no_grad():
        for name, layer, feedback in alignlab.converted_layers(mapped):
            if feedback.rule_name == "fa":
                feedback.B.copy_(layer.weight)
    x = torch.randn(4, 1, 8, 8)
    assert_grads_equal(run_backward(mapped, x), run_backward(ref, x))


def test_converting_again_with_a_map_puts_unmatched_layers_back_on_bp():
    model = alignlab.convert(Mixed(), "fa")
    with pytest.warns(UserWarning, match="no pattern of the rule map"):
        alignlab.convert(model, {"features": "kp", "classifier": "dfa", "attn": "fa"})
    assert type(model.extra) is nn.Linear and "extra" not in _rules_of(model)
    with pytest.raises(ValueError, match="stay on BP"):
        alignlab.convert(Mixed(), {"features": "kp"}, strict=True)


@pytest.mark.parametrize("spec, options, message", [
    ({"nothing": "fa"}, {}, "rule map pattern 'nothing' matches no module; module names: features, "),
    ({"*": "fb"}, {}, "unknown rule 'fb'"),
    ({"*": "fa"}, {"init": "xavier"}, "with a rule map, give options in rule instances"),
    ({}, {}, "the rule map is empty"),
])
def test_bad_rule_maps_are_one_line_errors(spec, options, message):
    with pytest.raises(ValueError, match=message) as info:
        alignlab.convert(Mixed(), spec, **options)
    assert "\n" not in str(info.value)
