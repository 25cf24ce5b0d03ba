"""The contract every learning rule keeps, as checks you can run on a rule of your own.

alignlab's test suite runs each check on every registered rule (``tests/test_contract.py``);
a new rule gets them all by being registered. Outside the package::

    import alignlab.testing
    alignlab.testing.check_rule("myrule")        # or a Rule instance; raises on the first failure

Each check builds small nets on synthetic tasks (CPU, a few seconds) and asserts a numerical
fact: the rule trains an MLP and a CNN well above chance; where its feedback is a tensor that
can be set to the forward weights, it then gives exactly BP's gradients; its state dict loads
with ``weights_only=True`` and reproduces the gradients bit for bit; it steps under bf16
autocast with fp32 gradients; ``torch.compile`` (aot_eager) gives eager's gradients; a
transformer converts and every parameter moves in one step; the diagnostics run. A check that
does not apply to a rule (a direct rule has no W-shaped feedback) raises :class:`NotApplicable`.
A rule's ``contract_options`` (a ClassVar) are the options the checks give it by default.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules
from .convert import convert, converted_layers
from .nn.kinds import layer_weight


class NotApplicable(Exception):
    """The check does not apply to this rule (the message says why)."""


# --- tasks and nets --------------------------------------------------------------------------


def teacher_task(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Labels from a fixed random linear teacher: 4 classes, 10 inputs."""
    w = torch.randn(10, 4, generator=torch.Generator().manual_seed(1234))  # one teacher for every split
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    return x, (x @ w).argmax(1)


def bars_task(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """8×8 images with one noisy bar: top/bottom rows (classes 0, 1) or left/right columns (2, 3)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    pos = torch.randint(0, 4, (n,), generator=g)
    for cls in range(4):
        idx = (y == cls).nonzero().flatten()
        offset = pos[idx] + (0 if cls % 2 == 0 else 4)
        if cls < 2:
            x[idx, 0, offset, :] += 2.0
        else:
            x[idx, 0, :, offset] += 2.0
    return x, y


def mlp(d_in: int = 10, hidden: int = 32, d_out: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def small_cnn() -> nn.Sequential:
    """Two convs (one strided) and a linear head, for ``bars_task``'s 1×8×8 images."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))


class TinyTransformer(nn.Module):
    """A 2-layer transformer encoder over token vectors, mean-pooled into a linear head."""

    def __init__(self, batch_first: bool = True, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=2 * dim, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)
        self.batch_first = batch_first

    def forward(self, x: Tensor, mask: Tensor | None = None, padding: Tensor | None = None) -> Tensor:
        h = self.encoder(x, mask=mask, src_key_padding_mask=padding)
        return self.head(h.mean(dim=1 if self.batch_first else 0))


def train_and_test(model: nn.Module, task, steps: int = 150) -> float:
    """Test accuracy after ``steps`` Adam steps (lr 3e-3, batch 64) on 1024 samples of ``task``."""
    x, y = task(1024, seed=0)
    xt, yt = task(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return (model(xt).argmax(1) == yt).float().mean().item()


def gradients(model: nn.Module, x: Tensor, call=None, seed: int = 0) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """(output, input gradient, {parameter: gradient}) for a fixed random upstream gradient;
    ``call(x)`` runs the model (default ``model(x)``)."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = (call or model)(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out))
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(a, b, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Two results of :func:`gradients` agree: outputs, input gradients and the gradients of
    every parameter of ``b`` (``a`` may have more: learned feedback)."""
    out_a, gx_a, g_a = a
    out_b, gx_b, g_b = b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
    torch.testing.assert_close(gx_a, gx_b, atol=atol, rtol=rtol)
    missing = set(g_b) - set(g_a)
    assert not missing, f"no gradient for {sorted(missing)}"
    for name in g_b:
        torch.testing.assert_close(g_a[name], g_b[name], atol=atol, rtol=rtol, msg=name)


def feedback_set_to_weights(model: nn.Module) -> bool:
    """Set each converted layer's feedback to its forward weight: the first feedback tensor of
    the weight's shape that, holding W, makes the feedback ``matrix`` exactly W keeps it (the
    others are left as they were). True when that succeeds for every layer (BP's feedback,
    None, counts as W)."""
    with torch.no_grad():
        return all(_set_to_weight(feedback, layer_weight(layer)) for _, layer, feedback in converted_layers(model))


def _set_to_weight(feedback, w: Tensor) -> bool:
    if feedback.direct or feedback.own_input_grad:
        return False
    if feedback.matrix(w) is None:
        return True
    for t in [*feedback.parameters(recurse=False), *feedback.buffers(recurse=False)]:
        if t.shape == w.shape and t.is_floating_point():
            old = t.clone()
            t.copy_(w)
            if torch.equal(feedback.matrix(w), w):
                return True
            t.copy_(old)
    return False


# --- the checks ------------------------------------------------------------------------------


def _rule(rule: str | rules.Rule) -> rules.Rule:
    if isinstance(rule, rules.Rule):
        return rule
    return rules.get(rule, **type(rules.get(rule)).contract_options)


def check_trains_mlp(rule) -> None:
    """An MLP 10-32-32-4 on a linear teacher: test accuracy > 0.85 after 150 steps (chance 0.25)."""
    torch.manual_seed(0)
    acc = train_and_test(convert(mlp(), _rule(rule)), teacher_task)
    assert acc > 0.85, f"MLP test accuracy {acc:.3f} <= 0.85"


def check_trains_cnn(rule) -> None:
    """A 2-conv CNN on noisy bars: test accuracy > 0.8 after 150 steps (chance 0.25)."""
    torch.manual_seed(0)
    acc = train_and_test(convert(small_cnn(), _rule(rule)), bars_task)
    assert acc > 0.8, f"CNN test accuracy {acc:.3f} <= 0.8"


def check_feedback_equal_to_weights_is_bp(rule) -> None:
    """Feedback tensors := forward weights gives BP's gradients, on a CNN and a transformer
    (convs, linears, packed attention projections); a rule name is given its ``exact_options``."""
    if not isinstance(rule, rules.Rule):
        exact = type(rules.get(rule)).exact_options
        rule = _rule(rule) if exact is None else rules.get(rule, **exact)
    torch.manual_seed(0)
    for model, x in ((small_cnn(), bars_task(6)[0]), (TinyTransformer(), torch.randn(3, 5, 16))):
        converted = convert(copy.deepcopy(model), rule)
        if not feedback_set_to_weights(converted):
            raise NotApplicable("no feedback tensor shaped like W makes its feedback exactly W (direct or derived feedback)")
        assert_same_gradients(gradients(converted, x), gradients(model, x))


def check_state_dict_round_trip(rule) -> None:
    """After a step, the state dict saves, loads with ``weights_only=True`` into a model built
    from another seed, and reproduces every tensor and the next gradients bit for bit."""
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return convert(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)), _rule(rule))

    a = build(0)
    opt = torch.optim.SGD(a.parameters(), lr=0.1, weight_decay=0.01)
    x = bars_task(5)[0]
    a(x).sum().backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = build(1)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert_same_gradients(gradients(b, x), gradients(a, x), atol=0, rtol=0)


def check_bf16_autocast(rule) -> None:
    """Under CPU bf16 autocast the output is bf16; the feedback tensors stay fp32, as the
    weights do; every parameter (feedback included) gets a finite fp32 gradient; SGD steps."""
    torch.manual_seed(0)
    model = convert(small_cnn(), _rule(rule))
    x, y = bars_task(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out, y)
        for name, layer, feedback in converted_layers(model):
            with torch.no_grad():
                b = None if feedback.direct or feedback.own_input_grad else feedback.matrix(layer_weight(layer))
            assert b is None or b.dtype == torch.float32, f"{name}: feedback built in {b.dtype} under autocast"
    assert out.dtype == torch.bfloat16, out.dtype
    loss.backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, (name, p.dtype)
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == torch.float32, (name, p.grad)
            assert torch.isfinite(p.grad).all(), name
    torch.optim.SGD(model.parameters(), lr=0.1).step()


def check_compile(rule) -> None:
    """``torch.compile(fullgraph=True, backend="aot_eager")`` traces the converted CNN without a
    graph break (any break raises) and gives the eager model's gradients at each of three SGD
    steps (so the feedback that follows W, and its guards, are checked after W changed too)."""
    torch._dynamo.reset()  # fresh caches: a limit hit by earlier compiles is not this rule's
    torch.manual_seed(0)
    eager = convert(small_cnn(), _rule(rule))
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1) for model in (eager, twin)]
    for step in range(3):
        x, y = bars_task(4, seed=step)
        for call, opt in zip((eager, compiled), optimizers):
            opt.zero_grad()
            F.cross_entropy(call(x), y).backward()
        for (name, a), b in zip(eager.named_parameters(), twin.parameters()):
            if a.grad is None:
                assert b.grad is None, name
            else:
                torch.testing.assert_close(a.grad, b.grad, msg=f"{name} (step {step})")
        for opt in optimizers:
            opt.step()


def check_channels_last(rule) -> None:
    """With its 4-D weights and feedback tensors in channels-last (NHWC) order and fed NHWC
    images, the converted CNN gives the contiguous model's outputs and gradients, and its
    4-D parameters' gradients keep that order, at each of two SGD steps (feedback that follows
    W is rebuilt after W changed)."""
    torch.manual_seed(0)
    plain = convert(small_cnn(), _rule(rule))
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1) for model in (plain, nhwc)]
    for step in range(2):
        x = bars_task(4, seed=step)[0]
        a = gradients(plain, x, seed=step)
        b = gradients(nhwc, x.contiguous(memory_format=torch.channels_last), seed=step)
        assert_same_gradients(b, a)
        for name, p in nhwc.named_parameters():
            if p.grad is not None and p.dim() == 4:
                assert p.grad.is_contiguous(memory_format=torch.channels_last), f"{name}: gradient not NHWC"
        for opt in optimizers:
            opt.step()


def check_transformer(rule) -> None:
    """A transformer encoder (packed attention, feed-forward, head) converts completely, and one
    Adam step moves every parameter, over 20 steps its loss falls."""
    torch.manual_seed(0)
    model = convert(TinyTransformer(), _rule(rule), strict=True)
    assert len(converted_layers(model)) == 9, [n for n, _, _ in converted_layers(model)]  # 2 × (attention, out_proj, 2 linears) + head
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for step in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 0:
            still = [n for (n, p), b in zip(model.named_parameters(), before) if p.requires_grad and torch.equal(p, b)]
            assert not still, f"parameters that did not move: {still}"
    assert losses[-1] < 0.9 * losses[0], losses


def check_diagnostics(rule) -> None:
    """The lab's diagnostics (angles to BP, feedback-weight angles, ranks) run on a converted
    CNN, leave its parameters as they were, and give a finite update angle for every layer."""
    from .diagnostics.probe import measure

    torch.manual_seed(0)
    model = convert(small_cnn(), _rule(rule))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = bars_task(16)
    values = measure(model, F.cross_entropy, x, y)
    for name, _, _ in converted_layers(model):
        assert math.isfinite(values[f"angle/{name}"]), (name, values.get(f"angle/{name}"))
        assert f"erank/delta/{name}" in values, name
    assert all(math.isfinite(v) for v in values.values()), values
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


CHECKS: dict[str, Callable] = {
    "trains_mlp": check_trains_mlp,
    "trains_cnn": check_trains_cnn,
    "feedback_equal_to_weights_is_bp": check_feedback_equal_to_weights_is_bp,
    "state_dict_round_trip": check_state_dict_round_trip,
    "bf16_autocast": check_bf16_autocast,
    "compile": check_compile,
    "channels_last": check_channels_last,
    "transformer": check_transformer,
    "diagnostics": check_diagnostics,
}


def check_rule(rule: str | rules.Rule, checks: list[str] | None = None) -> dict[str, str]:
    """Run the contract checks (all, or those named) on ``rule``; {check: "ok" | "n/a: why"}.
    The first failing check raises its AssertionError, prefixed with the check's name."""
    unknown = set(checks or ()) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; valid: {', '.join(CHECKS)}")
    results = {}
    for name in checks or CHECKS:
        try:
            CHECKS[name](rule)
            results[name] = "ok"
        except NotApplicable as why:
            results[name] = f"n/a: {why}"
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error
    return results
