"""torch.compile(fullgraph=True) traces the classic rules (and their options) without a graph
break, and the compiled model keeps each rule's semantics: brsf draws a new |R| and wm takes a
mirror step exactly when W's bits change (an operator the graph keeps opaque decides and draws,
as eager mode does), with the numbers eager mode draws, so a compiled run resumes an eager
one's checkpoint (and back) without a difference."""

import copy
import io
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignlab
from alignlab.testing import bars_task, small_cnn

VARIANTS = [
    ("bp", {}), ("fa", {}), ("fa", {"match_norm": True}), ("fa", {"init": "normal", "std": 0.01}),
    ("usf", {}), ("usf", {"scale": "spectral"}), ("usf", {"scale": "kaiming"}), ("usf", {"scale": 1.0}),
    ("frsf", {}), ("frsf", {"init": "normal"}), ("brsf", {}), ("brsf", {"init": "xavier"}),
    ("kp", {}), ("wm", {}), ("wm", {"mirror_batch": 8, "noise_std": 0.5}),
    ("fa", {"conv_feedback": "untied"}),
]
COUNTERS = ("step",)  # integer buffers that count draws or mirror steps


def _id(variant):
    rule, options = variant
    return rule + "".join(f"-{k}={v}" for k, v in options.items())


def _train(call, model, steps, start=0, accumulate=2):
    """SGD steps on bars; each step's gradient from ``accumulate`` passes on the same W."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: runs can be cut and resumed
    for step in range(start, start + steps):
        x, y = bars_task(8, seed=step)
        opt.zero_grad()
        for _ in range(accumulate):
            F.cross_entropy(call(x), y).backward()
        opt.step()
    return model


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key.endswith(COUNTERS):
            assert torch.equal(sa[key], sb[key]), (key, sa[key], sb[key])
        elif sa[key].is_floating_point():
            torch.testing.assert_close(sb[key], sa[key], msg=key)


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_fullgraph_compile_keeps_eager_semantics_over_steps(variant):
    """Three SGD steps of two accumulated passes each, then a pass on the last W: the compiled
    model (fullgraph: any graph break raises) ends with eager's parameters and feedback state,
    and brsf/wm counted one draw or mirror step per change of W."""
    rule, options = variant
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = alignlab.convert(small_cnn(), rule, **options)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    for call, model in ((eager, eager), (compiled, twin)):
        _train(call, model, 3)
        F.cross_entropy(call(bars_task(4)[0]), bars_task(4)[1]).backward()
    _assert_same_state(eager, twin)
    for _, _, feedback in alignlab.converted_layers(twin):
        if rule in ("brsf", "wm"):
            assert int(feedback.step) == {"brsf": 4, "wm": 3}[rule]  # brsf's first draw is at conversion


@pytest.mark.parametrize("rule", ["brsf", "wm"])
def test_compiled_run_resumes_an_eager_checkpoint_and_back(rule):
    """Eager for two steps, compiled from its state dict for two, eager again for one: the
    same state as five eager steps (the draws depend on seed, step and W's bits only)."""
    torch._dynamo.reset()

    def build():
        torch.manual_seed(0)
        return alignlab.convert(small_cnn(), rule)

    full = build()
    _train(full, full, 5)
    part = build()
    _train(part, part, 2)
    resumed = build()
    buffer = io.BytesIO()
    torch.save(part.state_dict(), buffer)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    compiled = torch.compile(resumed, backend="aot_eager", fullgraph=True)
    _train(compiled, resumed, 2, start=2)
    _train(resumed, resumed, 1, start=4)
    _assert_same_state(full, resumed)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
@pytest.mark.parametrize("rule", ["brsf", "wm"])
def test_inductor_draws_and_mirrors_when_eager_does(rule):
    """Compiled by inductor (the default backend; the draw or mirror step an opaque operator
    inside the fused graph): the same counters after two steps of two accumulated passes, brsf's
    R bit for bit (it depends on seed and step alone), wm's B to float tolerance (inductor's
    forward and backward round differently, so W does too)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = alignlab.convert(small_cnn(), rule)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True)
    for call, model in ((eager, eager), (compiled, twin)):
        _train(call, model, 2)
        F.cross_entropy(call(bars_task(4)[0]), bars_task(4)[1]).backward()
    for (_, _, a), (_, _, b) in zip(alignlab.converted_layers(eager), alignlab.converted_layers(twin)):
        assert int(a.step) == int(b.step) == {"brsf": 3, "wm": 2}[rule]
        if rule == "brsf":
            assert torch.equal(a.R, b.R)
        else:
            torch.testing.assert_close(b.B, a.B, rtol=1e-4, atol=1e-5)
