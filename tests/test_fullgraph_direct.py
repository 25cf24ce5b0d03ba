"""Direct rules (dfa, direct ldfa) under ``torch.compile(fullgraph=True)``: the traced route of
alignlab.nn.direct (a collector on the output tensor, no hooks) gives the eager hook route's
gradients, step after step; and the same route, taken eagerly, on the shapes and outputs the
compiled tests do not reach."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import alignlab
from alignlab.nn import direct
from alignlab.testing import TinyTransformer, bars_task, mlp, small_cnn, teacher_task


def _tokens(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, 16, generator=g), torch.randint(0, 3, (n,), generator=g)


NETS = {"mlp": (mlp, teacher_task), "cnn": (small_cnn, bars_task), "transformer": (TinyTransformer, _tokens)}
RULES = {
    "dfa-broadcast": {"rule": "dfa"},
    "dfa-dense": {"rule": "dfa", "project": "dense"},
    "dfa-kernel": {"rule": "dfa", "project": "kernel"},
    "ldfa": {"rule": "ldfa", "direct": True},
    "ldfa-targets": {"rule": "ldfa", "direct": True, "targets": True},
}


def _assert_same_grads(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(q.grad, p.grad, msg=name)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("rule", RULES)
def test_fullgraph_compile_gives_eagers_gradients_over_three_sgd_steps(net, rule):
    build, task = NETS[net]
    torch.manual_seed(0)
    eager = alignlab.convert(build(), **RULES[rule], strict=True)
    twin = copy.deepcopy(eager)  # before any pass: dfa's B is drawn inside the compiled forward
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (eager, twin)]
    try:
        for step in range(3):
            x, y = task(16, seed=step)
            for call, opt in zip((eager, compiled), opts):
                opt.zero_grad()
                F.cross_entropy(call(x), y).backward()
            _assert_same_grads(eager, twin)
            for opt in opts:
                opt.step()
    finally:
        torch._dynamo.reset()


# --- the traced route, taken eagerly ----------------------------------------------------------


class Tokens(nn.Module):
    """A per-token model: every Linear's input has the output's positions (one error per position)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class Outputs(nn.Module):
    """A Linear pair returning ``kind``: a dict with logits, a (scalar, logits) tuple, a list."""

    def __init__(self, kind: str):
        super().__init__()
        self.a, self.b, self.kind = nn.Linear(4, 6), nn.Linear(6, 3), kind

    def forward(self, x):
        logits = self.b(torch.tanh(self.a(x)))
        if self.kind == "dict":
            return {"features": torch.ones(1), "logits": logits}
        return (x.sum(), logits) if self.kind == "tuple" else [logits]


def _logits(out):
    return out["logits"] if isinstance(out, dict) else out[-1] if isinstance(out, (tuple, list)) else out


def _both_routes(build, options, x, loss, monkeypatch, passes: int = 1):
    """Gradients of ``passes`` forwards (then one backward) by the hook route and the traced route."""
    grads = []
    for collect in (False, True):
        monkeypatch.setattr(direct, "COLLECT_EAGERLY", collect)
        torch.manual_seed(0)
        model = alignlab.convert(build(), **options)
        total = sum(loss(model(x[i]), i) for i in range(passes))
        total.backward()
        grads.append(model)
    _assert_same_grads(*grads)
    return grads


@pytest.mark.parametrize("options", [{"rule": "dfa"}, {"rule": "ldfa", "direct": True, "rank": 2}],
                         ids=["dfa", "ldfa"])
def test_traced_route_gives_the_hook_routes_gradients(options, monkeypatch):
    g = torch.Generator().manual_seed(0)
    # one error per position, two forwards before one backward (each its own error)
    x, y = torch.randn(2, 3, 5, 4, generator=g), torch.randint(0, 3, (2, 3, 5), generator=g)

    def per_token(out, i):
        return F.cross_entropy(out.flatten(0, 1), y[i].flatten())

    _both_routes(Tokens, options, x, per_token, monkeypatch, passes=2)
    # outputs of every form (the collector's output takes the logits' place), and output=
    xs = torch.randn(1, 5, 4, generator=g)
    ce = lambda out, i: F.cross_entropy(_logits(out), torch.tensor([0, 1, 2, 0, 1]))  # noqa: E731
    for kind, output in (("dict", None), ("tuple", 1), ("list", None), ("dict", lambda out: out["logits"])):
        _both_routes(lambda: Outputs(kind), {**options, "output": output}, xs, ce, monkeypatch)


def test_traced_route_with_a_loss_computed_inside_the_model_is_a_one_line_error(monkeypatch):
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x, y):
            logits = self.a(x)
            return {"loss": F.cross_entropy(logits, y), "logits": logits}

    model = alignlab.convert(WithLoss(), "dfa")
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    model(x, y)["loss"].backward()  # eagerly, the hook route sees the in-model loss
    assert model.a.weight.grad is not None
    monkeypatch.setattr(direct, "COLLECT_EAGERLY", True)
    with pytest.raises(RuntimeError, match="computed one itself") as info:
        model(x, y)
    assert "\n" not in str(info.value)
