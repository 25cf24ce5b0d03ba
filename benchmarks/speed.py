"""Training-step speed and peak memory of every learning rule against plain PyTorch BP.

    python benchmarks/speed.py [--rounds N] [--nets mlp,lenet,resnet20,vit] [--rules fa,dfa,...]
                               [--biotorch] [--quick] [--no-memory] [--no-macs] [--profile]
                               [--compile [NETS] | --no-compile] [--compile-rules fa,dfa,...]
                               [--compile-backend inductor|aot_eager|...]

For each network (batch 128, fixed random inputs, no data loading) it builds one model,
then one deep copy per rule converted by ``alignlab.convert`` (all start from the same
weights), plus the unconverted model as the reference ("torch": plain PyTorch BP), plus
with ``--biotorch`` the same network converted by BioTorch 0.0.16 (fa, usf, dfa).

Speed: one full training step is forward, cross-entropy, backward and an SGD step
(``zero_grad`` included). After a warm-up, every round times every model once (a visit of
1 to 20 steps, as many as fill about 0.15 s for that model), in an order rotated by one each
round; the figure of merit is the median over rounds of (rule's time per step / reference's
time per step in that round), so slow drifts of the machine's load cancel out.

Arithmetic: after the timed rounds, one more step of each model runs under
``torch.utils.flop_counter.FlopCounterMode``, which counts the matmul-like aten ops dispatched
(mm, addmm, bmm, convolution, convolution_backward, scaled-dot-product attention and its
backward; alignlab's custom autograd Functions' backward ops included). Reported as
multiply-accumulates (MACs = the counter's FLOPs / 2: it counts 2 FLOPs per MAC) per whole
step; element-wise work (activations, norms, loss, the SGD step, sign rebuilds, random draws)
counts 0. The MAC ratio to the reference is the rule's arithmetic limit: the time ratio it
would have if time went as MACs.

Compiled rows (by default on mlp and lenet in a full run, none with --quick; ``--compile``
alone: every net timed; ``--compile NETS``: those): "torch+compile", the plain model under
``torch.compile`` (the second reference), and "<rule>+compile" per rule (``--compile-rules``
picks some), each a twin of its eager row (same weights, same feedback draws) whose forward,
and with it the backward, is compiled; loss, ``backward()`` and the SGD step stay eager. Each
row compiles a function of its own that calls the model (the graph ``torch.compile(model)``
traces; see ``_own_forward`` for why not the model itself). ``fullgraph=True`` is tried first;
where dynamo refuses it the row compiles without and shows "graph breaks: N" (graphs dynamo
compiled in the first step - 1, as ``torch._dynamo.explain`` counts) and the reason. The
compile happens in the first step, before the warm-up (at least 3 more steps), so it is not
timed; the row reports it (first step + warm-up beyond steps x fastest step) and any
recompile. Compiled rows are timed in the same interleaved rounds as the eager ones and report
two ratios, median over rounds of per-round ratios: to eager plain BP and to compiled plain BP;
their targets (fa <= 1.03, dfa and ldfa < 1.00) are on the second. MACs: the eager twin's
count (the same arithmetic; counting under the compiled code would trace again). Memory: not
measured. Backend: ``--compile-backend`` (default inductor); probed with a tiny function
first, and when it does not work here (inductor on a CPU needs a C++ compiler) aot_eager is
used and the results header says so.

Memory: one fresh subprocess per (network, model) builds the network and inputs, resets the
kernel's peak-RSS mark (so torch's import peak does not hide the steps), converts, runs
warm-up + a few steps and reports its peak RSS (VmHWM; ``ru_maxrss`` would also carry the
forked parent's peak), or ``torch.cuda.max_memory_allocated`` on CUDA. With training =
peak - start of the same process, the target is training(rule) - training(BP) <= feedback +
5 % of training(BP), feedback = bytes of the state-dict entries under ``feedback.``.

Writes benchmarks/results/speed.json and speed.md (speed-quick.* with --quick);
``--profile`` instead writes speed-profile.md: torch.profiler's top ops for BP and the rules.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

try:  # a source checkout without `pip install -e .` still runs
    import alignlab  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "src"))
    import alignlab  # noqa: F401

import torch
import torch.nn.functional as F
from torch import nn

from alignlab import converted_layers, models

BIOTORCH_PIP = "pip install --no-deps biotorch==0.0.16"
BIOTORCH_MODES = ("fa", "usf", "dfa")
REFERENCE = "torch"  # the unconverted model: plain PyTorch BP

# the speed targets per net: the median time ratio to BP must not exceed these; MACS:
# within MAC_SLACK of the rule's own MAC ratio (pfa, whose arithmetic exceeds BP's); nets and
# rules not named: report only
MACS = "macs"
MAC_SLACK = 1.10
_SHARED = {"fa": 1.03, "usf": 1.03, "frsf": 1.03, "brsf": 1.05, "kp": 1.10, "pfa": MACS}
SPEED_TARGETS = {
    "mlp": {**_SHARED, "ldfa": 0.85, "dfa": 0.85},
    "lenet": {**_SHARED, "ldfa": 1.00, "dfa": 0.97},
    "resnet20": {**_SHARED, "ldfa": 0.95, "dfa": 0.85},
}


def speed_target(net: str, label: str, mac_ratio: float | None) -> float | None:
    """The bound on ``label``'s time ratio to BP on ``net`` (None: report only)."""
    target = SPEED_TARGETS.get(net, {}).get(label)
    if target == MACS:
        return None if mac_ratio is None else MAC_SLACK * mac_ratio
    return target

# compiled rows: "<label>+compile" is the model of the eager row <label> (its "twin") under
# torch.compile; "torch+compile" is compiled plain PyTorch BP, the second reference
COMPILED = "+compile"
COMPILED_REFERENCE = REFERENCE + COMPILED
# the targets for compiled rules, on the ratio to compiled plain BP: (bound, strict):
# fa <= 1.03x, dfa and ldfa below compiled BP (< 1.00x); other compiled rules: report only
COMPILED_TARGETS = {"fa": (1.03, False), "dfa": (1.00, True), "ldfa": (1.00, True)}
DEFAULT_COMPILE_NETS = ("mlp", "lenet")  # a full run's compiled rows (--compile adds the others)
COMPILE_FALLBACK = "aot_eager"  # when the asked backend cannot compile here (inductor without a C++ compiler)
MEMORY_SLACK = 0.05  # of BP's own training memory (peak - start)


@dataclass(frozen=True)
class NetSpec:
    model: str
    in_shape: tuple[int, ...]
    options: dict = field(default_factory=dict)
    rounds: int = 30  # default timed rounds
    norm: str | None = None


NETS = {
    "mlp": NetSpec("mlp", (1, 28, 28), {"depth": 2, "width": 1024}, rounds=30),
    "lenet": NetSpec("lenet", (1, 28, 28), {}, rounds=30),
    "resnet20": NetSpec("resnet20", (3, 32, 32), {}, rounds=20, norm="batch"),
    # models.build("vit") defaults: patch 4 (64 tokens + class token), dim 128, depth 4, heads 4
    "vit": NetSpec("vit", (3, 32, 32), {}, rounds=20),
}
DEFAULT_NETS = "mlp,lenet,resnet20"  # vit only when asked for (--nets ...,vit)
# --quick: tiny versions of the same networks, for tests
QUICK_NETS = {
    "mlp": NetSpec("mlp", (1, 8, 8), {"depth": 2, "width": 32}, rounds=2),
    "lenet": NetSpec("lenet", (1, 28, 28), {}, rounds=2),
    "resnet20": NetSpec("resnet20", (3, 16, 16), {}, rounds=2, norm="batch"),
    "vit": NetSpec("vit", (3, 16, 16), {"dim": 32, "depth": 1, "heads": 2}, rounds=2),
}


@dataclass
class Settings:
    nets: list[str]
    rules: list[str]
    biotorch: bool = False
    rounds: int | None = None  # None: each net's default
    warmup: int = 3
    batch: int = 128
    visit_s: float = 0.15  # each model gets as many steps per visit as fill about this (1 to 20)
    memory: bool = True
    macs: bool = True  # count each model's multiply-accumulates per step (one extra step)
    memory_warmup: int = 1  # steps in each memory subprocess: warm-up, then more steps
    memory_steps: int = 2  # (SGD's momentum buffers exist from the first step on)
    memory_jobs: int = 2  # memory workers run side by side
    quick: bool = False
    device: str = "cpu"
    seed: int = 0
    num_classes: int = 10
    compile_nets: list[str] = field(default_factory=list)  # nets that get compiled rows
    compile_rules: list[str] | None = None  # rules compiled there (None: all of ``rules``)
    compile_backend: str = "inductor"
    compile_warmup: int = 3  # steps after the compiling one, before the timed rounds (at least)

    def spec(self, net: str) -> NetSpec:
        return (QUICK_NETS if self.quick else NETS)[net]


# ----------------------------------------------------------------------------- models


def net_and_data(settings: Settings, net: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The base model (seeded) and one fixed random batch."""
    spec = settings.spec(net)
    torch.manual_seed(settings.seed)
    model = models.build(spec.model, in_shape=spec.in_shape, num_classes=settings.num_classes,
                         norm=spec.norm, **spec.options)
    g = torch.Generator().manual_seed(settings.seed + 1)
    x = torch.randn(settings.batch, *spec.in_shape, generator=g)
    y = torch.randint(0, settings.num_classes, (settings.batch,), generator=g)
    dev = torch.device(settings.device)
    return model.to(dev), x.to(dev), y.to(dev)


def fail(message: str) -> None:
    """Bad input or a missing dependency: one line on stderr, exit status 2 (as the alignlab CLI)."""
    print(f"speed.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def require_biotorch():
    try:
        from biotorch.module.biomodule import BioModule
    except ImportError:
        fail(f"--biotorch needs BioTorch 0.0.16 in this environment; run: {BIOTORCH_PIP}")
    return BioModule


@dataclass
class Candidate:
    label: str  # "torch", an alignlab rule name, "biotorch-<mode>", or one of those + "+compile"
    kind: str  # "reference" | "alignlab" | "biotorch" | "compiled"
    model: nn.Module
    step: Callable[[], torch.Tensor]
    optimizer: torch.optim.Optimizer
    last_loss: float = math.nan
    compiled: dict | None = None  # compiled rows: twin, backend, fullgraph, graphs, compile time


def make_candidate(settings: Settings, label: str, base: nn.Module, x, y, copy_model: bool = True) -> Candidate:
    """A deep copy of ``base`` (or ``base`` itself) converted for ``label``, with its own SGD
    and step function."""
    torch.manual_seed(settings.seed + 2)  # the same feedback draws in the timing and memory runs
    model = copy.deepcopy(base) if copy_model else base
    dfa_biotorch = False
    if label == REFERENCE:
        kind = "reference"
    elif label.startswith("biotorch-"):
        kind, mode = "biotorch", label.split("-", 1)[1]
        BioModule = require_biotorch()
        # its DFA layers use register_backward_hook, which torch warns about at every forward
        warnings.filterwarnings("ignore", message="Using a non-full backward hook")
        with contextlib.redirect_stdout(io.StringIO()):
            model = BioModule(model, mode=mode, output_dim=settings.num_classes if mode == "dfa" else None)
        dfa_biotorch = mode == "dfa"
    else:
        kind = "alignlab"
        alignlab.convert(model, rule=label)
    model.train()
    # the optimizer comes after convert, so KP's feedback parameters are in it (as the README says)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    if dfa_biotorch:
        def step():  # BioTorch's own DFA loop: the model takes targets and the loss function
            opt.zero_grad()
            out = model(x, y, F.cross_entropy)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            return loss
    else:
        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
    return Candidate(label, kind, model, step, opt)


def candidate_labels(settings: Settings, net: str | None = None) -> list[str]:
    """The eager rows, then (for a net in ``settings.compile_nets``) the compiled ones."""
    labels = [REFERENCE] + list(settings.rules)
    if settings.biotorch:
        labels += [f"biotorch-{m}" for m in BIOTORCH_MODES]
    return labels + compiled_labels(settings, net)


def compiled_labels(settings: Settings, net: str | None) -> list[str]:
    if net is None or net not in settings.compile_nets:
        return []
    return [COMPILED_REFERENCE] + [r + COMPILED for r in compiled_rules(settings)]


def compiled_rules(settings: Settings) -> list[str]:
    """The alignlab rules that get compiled rows (on the nets in ``compile_nets``)."""
    if settings.compile_rules is None:
        return list(settings.rules)
    return [r for r in settings.rules if r in settings.compile_rules]


# ----------------------------------------------------------------------------- compiled rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _break_reason(exc: BaseException) -> str:
    """Why dynamo refused fullgraph=True, in one line: its message's first line and the
    innermost line of user code it names (dynamo's "from user code:" trace)."""
    import re

    line = _one_line(exc)
    text = str(exc)
    if "from user code:" in text:
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text.split("from user code:", 1)[1])
        if frames:
            path, lineno, func = frames[-1]
            path = path.split("/src/", 1)[1] if "/src/" in path else path.replace(str(HERE.parent) + "/", "")
            line += f" at {path}:{lineno} ({func})"
    return line


def _graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _own_forward(model: nn.Module, label: str) -> Callable:
    """``lambda x: model(x)`` with a code object of its own, for ``torch.compile``.

    Dynamo keeps per-code-object state: compiling ``model`` itself would put every row's top
    frame on the same code (``Sequential.forward`` for LeNet). A rule that breaks the graph
    inside that frame's loop makes dynamo mark the code "skip", and from then on every other
    compiled row of the same class runs that frame eagerly (measured: compiled fa fell from 1
    graph to 5 pieces, and compiled plain BP to 0 graphs, i.e. eager, once compiled dfa had
    run; with fullgraph=True it raised instead). One code object per row keeps rows apart;
    the graph traced is the same as ``torch.compile(model)``'s."""
    def forward(inp):
        return model(inp)

    name = "compiled_" + "".join(ch if ch.isalnum() else "_" for ch in label)
    code = forward.__code__.replace(co_name=name)
    if hasattr(code, "co_qualname"):
        code = code.replace(co_qualname=name)
    return types.FunctionType(code, forward.__globals__, name, None, forward.__closure__)


def _compiled_step(compiled: Callable, opt: torch.optim.Optimizer, x, y) -> Callable[[], torch.Tensor]:
    def step():  # the loss, backward and the optimizer step stay eager
        opt.zero_grad()
        loss = F.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def make_compiled_candidate(settings: Settings, label: str, base: nn.Module, x, y) -> Candidate:
    """The twin's model (``make_candidate``: same weights, same feedback draws), compiled, and
    its first step run (that step compiles). ``fullgraph=True`` first; when dynamo refuses it,
    compiled again without, and the graphs it compiled in that first step counted (graph
    breaks = graphs - 1, as ``torch._dynamo.explain`` counts them)."""
    twin = label.removesuffix(COMPILED)
    c = make_candidate(settings, twin, base, x, y)
    info = {"twin": twin, "backend": settings.compile_backend}
    _sync(settings.device)
    tic = time.perf_counter()
    try:
        compiled = torch.compile(_own_forward(c.model, label), backend=settings.compile_backend, fullgraph=True)
        step = _compiled_step(compiled, c.optimizer, x, y)
        g0 = _graphs_compiled()
        loss = step()
        info["fullgraph"] = True
    except Exception as exc:
        info["fullgraph"] = False
        info["fullgraph_error"] = _break_reason(exc)
        info["fullgraph_attempt_s"] = time.perf_counter() - tic
        compiled = torch.compile(_own_forward(c.model, label), backend=settings.compile_backend)
        step = _compiled_step(compiled, c.optimizer, x, y)
        g0 = _graphs_compiled()
        loss = step()  # an error here drops the row
    _sync(settings.device)
    info["first_step_s"] = time.perf_counter() - tic
    info["graphs"] = _graphs_compiled() - g0
    info["graph_breaks"] = 0 if info["fullgraph"] else max(0, info["graphs"] - 1)
    c = Candidate(label, "compiled", c.model, step, c.optimizer, float(loss.detach()), compiled=info)
    return c


def _dynamo_limits() -> dict:
    """Dynamo's recompile limits, raised for one process holding many compiled models: rules
    that break the graph compile each converted layer's frame on its own, one cache entry per
    layer instance on a code object all layers of that class share; at the default limit (8)
    dynamo would give up on that code and run the rest of those layers eagerly."""
    import torch._dynamo.config as cfg

    limits = {}
    for name, value in (("recompile_limit", 1024), ("cache_size_limit", 1024),
                        ("accumulated_recompile_limit", 65536), ("accumulated_cache_size_limit", 65536)):
        if hasattr(cfg, name) and getattr(cfg, name) < value:
            limits[name] = value
    return limits


def probe_compile_backend(backend: str, device: str) -> str | None:
    """None when ``backend`` compiles a tiny function and its gradient here; else why not
    (one line). Inductor on a CPU needs a working C++ compiler."""
    def tiny(a):
        return (torch.relu(a) * 2).sum()

    try:
        a = torch.randn(8, device=device, requires_grad=True)
        torch.compile(_own_forward(tiny, f"probe_{backend}"), backend=backend, fullgraph=True)(a).backward()
    except Exception as exc:
        return _one_line(exc)
    return None


def resolve_compile_backend(settings: Settings, log=print) -> tuple[Settings, dict]:
    """Settings with a backend that works on this machine (the asked one, else aot_eager), and
    what was asked, used and why, for the report."""
    asked = settings.compile_backend
    tic = time.perf_counter()
    why = probe_compile_backend(asked, settings.device)
    info = {"asked_backend": asked, "backend": asked, "probe_s": time.perf_counter() - tic}
    if why is not None and asked != COMPILE_FALLBACK:
        log(f"compile: backend {asked} does not work here ({why}); falling back to {COMPILE_FALLBACK}")
        info.update(backend=COMPILE_FALLBACK, fallback_reason=why)
        if probe_compile_backend(COMPILE_FALLBACK, settings.device) is not None:
            why = f"{asked} and {COMPILE_FALLBACK} both fail"
        else:
            why = None
    if why is not None:
        info["error"] = why
        log(f"compile: no compiled rows ({why})")
    return replace(settings, compile_backend=info["backend"]), info


def feedback_bytes(model: nn.Module) -> int:
    """Bytes of the state-dict entries that are feedback: alignlab's ``feedback.`` entries,
    BioTorch's ``weight_backward``/``bias_backward``."""
    total = 0
    for key, t in model.state_dict().items():
        parts = key.split(".")
        if any(p in ("feedback", "in_proj_feedback") for p in parts[:-1]) or parts[-1] in (
                "weight_backward", "bias_backward"):
            total += t.numel() * t.element_size()
    return total


def extra_feedback_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Feedback memory that is not in the state dict: tensors derived from W each step
    (sign-symmetry's B) and the gradients and optimizer state of learned feedback (KP)."""
    stored = {t.data_ptr() for t in model.state_dict().values()}
    derived = grads = state = 0
    for _, layer, fb in converted_layers(model):
        for p in fb.parameters():
            if p.grad is not None:
                grads += p.grad.numel() * p.grad.element_size()
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v):
                    state += v.numel() * v.element_size()
        if getattr(fb, "direct", False):
            continue
        weight = getattr(layer, "weight", None)
        if weight is None:
            weight = getattr(layer, "in_proj_weight", None)
        if weight is None:
            continue
        with torch.no_grad():
            m = fb.matrix(weight)
        if m is not None and m.data_ptr() not in stored:
            derived += m.numel() * m.element_size()
    return {"derived_bytes": derived, "feedback_grad_bytes": grads, "feedback_optimizer_bytes": state}


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(settings: Settings, net: str, log=print) -> dict:
    """Round-robin timing of every candidate of ``net``; returns the per-net result dict."""
    limits = _dynamo_limits() if compiled_labels(settings, net) else {}
    if not limits:
        return _time_interleaved(settings, net, log)
    import torch._dynamo

    try:
        with torch._dynamo.config.patch(**limits):
            return _time_interleaved(settings, net, log)
    finally:  # the compiled models of this net are gone: drop dynamo's caches of them
        torch._dynamo.reset()


def _time_interleaved(settings: Settings, net: str, log=print) -> dict:
    base, x, y = net_and_data(settings, net)
    labels = candidate_labels(settings, net)
    cands, errors = [], {}
    for label in labels:
        compiled = label.endswith(COMPILED)
        if compiled and label != COMPILED_REFERENCE and COMPILED_REFERENCE in errors:
            errors[label] = f"not compiled: {COMPILED_REFERENCE} failed"
            continue
        try:
            if compiled:
                log(f"  {net}: compiling {label} ({settings.compile_backend})")
                c = make_compiled_candidate(settings, label, base, x, y)
                info = c.compiled
                log(f"  {net}: {label}: first step {info['first_step_s']:.1f} s, "
                    + ("fullgraph" if info["fullgraph"] else
                       f"graph breaks: {info['graph_breaks']} ({info['fullgraph_error'][:120]})"))
            else:
                c = make_candidate(settings, label, base, x, y)
            cands.append(c)
        except Exception as exc:  # a rule that cannot convert this net is reported, not fatal
            if label == REFERENCE:
                raise
            errors[label] = f"{type(exc).__name__}: {exc}"
            log(f"  {net}: {label} skipped ({errors[label]})")

    # warm-up; each model's fastest warm-up step sets its steps per visit (a visit lasts about
    # visit_s, so a slow rule does not stretch the run and a fast one is not one timer tick).
    # A compiled model's warm-up follows its compiling first step; its compile time is the
    # first step plus the warm-up beyond (steps x fastest step): recompiles count in it.
    steps = {}
    for c in list(cands):
        fastest, spent = math.inf, 0.0
        n = max(1, settings.warmup) if c.compiled is None else max(1, settings.warmup, settings.compile_warmup)
        g0 = _graphs_compiled() if c.compiled is not None else 0
        try:
            for _ in range(n):
                _sync(settings.device)
                tic = time.perf_counter()
                c.step()
                _sync(settings.device)
                dt = time.perf_counter() - tic
                fastest, spent = min(fastest, dt), spent + dt
        except Exception as exc:  # a rule whose step fails on this net is reported, not fatal
            if c.label == REFERENCE:
                raise
            errors[c.label] = f"{type(exc).__name__}: {exc}"
            log(f"  {net}: {c.label} dropped ({errors[c.label]})")
            cands.remove(c)
            continue
        if c.compiled is not None:
            info = c.compiled
            info["warmup_steps"] = n
            info["recompiles_warmup"] = _graphs_compiled() - g0
            info["compile_s"] = info["first_step_s"] + spent - (n + 1) * fastest
            info["recompiles_timed"] = 0
        steps[c.label] = 1 if settings.quick else max(1, min(20, round(settings.visit_s / fastest)))
    if COMPILED_REFERENCE in errors:  # no second reference: no compiled row can be compared
        for c in [c for c in cands if c.compiled is not None]:
            errors[c.label] = f"not timed: {COMPILED_REFERENCE} failed"
            cands.remove(c)
    rounds = settings.rounds or settings.spec(net).rounds

    times = {c.label: [] for c in cands}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(cands)
            for c in cands[k:] + cands[:k]:
                g0 = _graphs_compiled() if c.compiled is not None else 0
                _sync(settings.device)
                tic = time.perf_counter()
                for _ in range(steps[c.label]):
                    loss = c.step()
                _sync(settings.device)
                times[c.label].append((time.perf_counter() - tic) / steps[c.label] * 1e3)
                c.last_loss = float(loss.detach())
                if c.compiled is not None:  # a recompile here would be timed: reported
                    c.compiled["recompiles_timed"] += _graphs_compiled() - g0
            gc.collect()
            if not settings.quick and (r + 1) % 5 == 0:
                med = statistics.median(times[REFERENCE])
                log(f"  {net}: round {r + 1}/{rounds}, reference {med:.1f} ms/step")
    finally:
        if gc_was_enabled:
            gc.enable()

    # arithmetic: one more step of each model, counted (outside the timed rounds: the counter
    # slows every op down). A compiled row does the arithmetic of its eager twin, which is
    # what is counted for it (counting under the compiled code would mean tracing again)
    macs = {}
    if settings.macs:
        for c in cands:
            if c.compiled is not None:
                continue
            try:
                macs[c.label] = count_macs(c.step)
            except Exception as exc:  # counting is a report; a failure does not stop the timing
                macs[c.label] = {"macs_error": f"{type(exc).__name__}: {exc}"}
                log(f"  {net}: counting {c.label}'s MACs failed ({macs[c.label]['macs_error']})")
            _sync(settings.device)
        for c in cands:
            if c.compiled is not None and c.compiled["twin"] in macs:
                macs[c.label] = {**macs[c.compiled["twin"]], "macs_counted_on": c.compiled["twin"]}
    ref_macs = macs.get(REFERENCE, {}).get("macs")

    def ratio_stats(ms: list[float], ref: list[float]) -> tuple[float, list[float], list[float]]:
        ratios = [a / b for a, b in zip(ms, ref)]
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) >= 2 else [ratios[0]] * 3
        return statistics.median(ratios), [q[0], q[2]], ratios

    ref = times[REFERENCE]
    results = {}
    for c in cands:
        ms = times[c.label]
        med_ratio, iqr, ratios = ratio_stats(ms, ref)
        mac_ratio = macs[c.label]["macs"] / ref_macs if ref_macs and macs.get(c.label, {}).get("macs") else None
        target = speed_target(net, c.label, mac_ratio) if c.kind == "alignlab" else None
        strict = False
        results[c.label] = res = {
            "kind": c.kind,
            "median_ms": statistics.median(ms),
            "median_ratio": med_ratio,  # every row: to eager plain BP
            "ratio_iqr": iqr,
            "ratios": ratios,
            "ms_per_round": ms,
            "final_loss": c.last_loss,
        }
        judged = med_ratio
        if c.compiled is not None:  # and to compiled plain BP, which its target is on
            res.update(c.compiled)
            res["median_ratio_compiled"], res["ratio_iqr_compiled"], res["ratios_compiled"] = ratio_stats(
                ms, times[COMPILED_REFERENCE])
            judged = res["median_ratio_compiled"]
            target, strict = COMPILED_TARGETS.get(c.compiled["twin"], (None, False))
        res.update({
            "speed_target": target,
            "speed_target_strict": strict,  # True: the ratio must be below the target, not at it
            "speed_holds": None if target is None else (judged < target if strict else judged <= target),
            "steps_per_visit": steps[c.label],
        })
        if c.label in macs:
            m = macs[c.label]
            res.update(m)
            if m.get("macs") is not None and ref_macs:
                limit = m["macs"] / ref_macs
                res["mac_ratio"] = limit  # the arithmetic limit of the time ratio
                res["time_over_limit"] = med_ratio - limit
                if c.compiled is not None:  # compiled BP does plain BP's arithmetic: the same limit
                    res["time_over_limit_compiled"] = judged - limit
    for label, err in errors.items():
        kind = "compiled" if label.endswith(COMPILED) else "biotorch" if label.startswith("biotorch-") else "alignlab"
        results[label] = {"kind": kind, "error": err}
    spec = settings.spec(net)
    return {
        "model": spec.model, "in_shape": list(spec.in_shape), "options": spec.options, "norm": spec.norm,
        "batch": settings.batch, "rounds": rounds, "warmup_steps": settings.warmup,
        "visit_s": settings.visit_s, "reference": REFERENCE, "order": [c.label for c in cands],
        "compiled_reference": COMPILED_REFERENCE if any(c.compiled for c in cands) else None,
        "results": results,
    }


# ----------------------------------------------------------------------------- arithmetic


def _cpu_attention_flops(query, key, value, *args, **kwargs) -> int:
    """FLOPs of CPU's fused attention (not in torch's flop registry): QKᵀ and (scores)·V."""
    b, h, s_q, d = query
    s_k, d_v = key[-2], value[-1]
    return 2 * b * h * s_q * s_k * (d + d_v)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    """FLOPs of its backward, as torch counts the CUDA kernels': QKᵀ recomputed, dS, dV, dQ, dK."""
    b, h, s_q, d = query
    s_k, d_v = key[-2], value[-1]
    return 2 * b * h * s_q * s_k * (d + d_v + d_v + d + d)


def flop_counter():
    """A FlopCounterMode that also knows CPU's fused attention kernel (torch counts only the
    CUDA ones, so on CPU a transformer's attention matmuls would count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    custom = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        custom[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_attention_backward_flops
    return FlopCounterMode(display=False, custom_mapping=custom)


def count_macs(step: Callable[[], torch.Tensor]) -> dict:
    """Multiply-accumulates of one call of ``step`` (a whole training step), total and by aten op.

    FlopCounterMode counts 2 FLOPs per multiply-accumulate of every op it knows (matmuls,
    convolutions and their backward, attention); element-wise ops count 0. Ops run in the
    backward of custom autograd Functions are dispatched like any other and are counted."""
    with flop_counter() as counter:
        step()
    by_op = {str(op).removeprefix("aten."): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}
    return {"macs": counter.get_total_flops() // 2, "macs_by_op": dict(sorted(by_op.items()))}


# ----------------------------------------------------------------------------- memory


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, which ru_maxrss reads) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS: current RSS, VmHWM: its peak), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux's ru_maxrss also keeps the peak of
    the process image that exec replaced, i.e. of the benchmark's forked parent (over 1 GiB
    here), so every worker reported that parent's figure."""
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_worker(settings: Settings, net: str, label: str) -> dict:
    """Run in a fresh process: build the net and inputs, mark the start, convert, warm up and
    step, report the peak. On Linux the peak-RSS mark is reset after the build, so the import
    of torch (a transient peak of its own) does not hide the training steps' memory."""
    cuda = settings.device.startswith("cuda")
    base, x, y = net_and_data(settings, net)
    gc.collect()
    out = {"label": label}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out["start_bytes"] = torch.cuda.memory_allocated()
    else:
        out["peak_reset"] = _reset_peak_rss()
        out["start_bytes"] = _status_bytes("VmRSS") if out["peak_reset"] else None
    c = make_candidate(settings, label, base, x, y, copy_model=False)
    for _ in range(settings.memory_warmup + settings.memory_steps):
        c.step()
    if cuda:
        torch.cuda.synchronize()
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        out["peak_bytes"] = _peak_rss_bytes()
    # after the peak is read: these may allocate
    out["feedback_bytes"] = feedback_bytes(c.model)
    out.update(extra_feedback_bytes(c.model, c.optimizer))
    return out


def worker_args(settings: Settings) -> list[str]:
    args = ["--batch", str(settings.batch), "--memory-warmup", str(settings.memory_warmup),
            "--memory-steps", str(settings.memory_steps), "--device", settings.device,
            "--seed", str(settings.seed)]
    return args + (["--quick"] if settings.quick else [])


def worker_env() -> dict:
    """The memory workers' environment. glibc raises its mmap threshold each time a large
    block is freed, so later blocks come from the heap and stay resident after being freed:
    RSS then counts dead temporaries (conversion's random draws, say) by chance. A fixed
    threshold sends every block over 64 KiB back to the OS when freed, so the peak RSS
    tracks live tensors (measured: FA's peak over BP's = its B + 0.5 MiB, run to run within
    0.2 MiB; with glibc's default, B + 7 MiB ± 1 MiB on the MLP)."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    return env


def measure_memory(settings: Settings, net: str, labels: list[str], log=print) -> dict:
    """Peak memory of each label, each in its own fresh subprocess. Workers run
    ``settings.memory_jobs`` at a time: each one's RSS is its own, so running them side by
    side changes their speed, not their memory (most of their time is importing torch)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(label: str):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", net, label,
               *worker_args(settings)]
        return label, subprocess.run(cmd, capture_output=True, text=True, env=worker_env())

    out = {}
    with ThreadPoolExecutor(max_workers=max(1, settings.memory_jobs)) as pool:
        for label, proc in pool.map(one, labels):
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                out[label] = {"error": last}
                log(f"  {net}: memory of {label} failed: {last}")
                continue
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def memory_verdicts(mem: dict, results: dict) -> None:
    """Attach each label's memory figures and the target check to ``results``."""
    bp = mem.get(REFERENCE, {})
    bp_peak, bp_start = bp.get("peak_bytes"), bp.get("start_bytes")
    for label, res in results.items():
        m = mem.get(label)
        if m is None:
            continue
        if "error" in m:
            res["memory"] = {"error": m["error"]}
            continue
        entry = dict(m)
        entry.pop("label", None)
        peak, fb = m["peak_bytes"], m["feedback_bytes"]
        if m.get("start_bytes") is not None:
            entry["training_bytes"] = peak - m["start_bytes"]  # what convert + steps added
        if bp_peak is not None:
            # compare what the steps added over each process's start when both are known: the
            # start RSS itself varies by a few hundred KiB from process to process
            if bp_start is not None and m.get("start_bytes") is not None:
                delta = entry["training_bytes"] - (bp_peak - bp_start)
                bp_training = bp_peak - bp_start
            else:
                delta, bp_training = peak - bp_peak, bp_peak
            entry["delta_vs_bp_bytes"] = delta
            allowed = fb + MEMORY_SLACK * bp_training
            entry["allowed_delta_bytes"] = allowed
            if res.get("kind") == "alignlab":
                entry["holds"] = delta <= allowed
                extra = m["derived_bytes"] + m["feedback_grad_bytes"] + m["feedback_optimizer_bytes"]
                entry["holds_counting_all_feedback"] = delta <= allowed + extra
        res["memory"] = entry


# ----------------------------------------------------------------------------- profile


def profile(settings: Settings, nets: list[str], labels: list[str], steps: int = 5, repeats: int = 3,
            top: int = 10) -> str:
    """Markdown: torch.profiler's top ops (self CPU time) per step of each label.

    Each label is profiled ``repeats`` times over ``steps`` steps, interleaved with the other
    labels (order rotated per repeat); each op's figure is the median over the repeats."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    parts = ["# Where the time goes (torch.profiler, self CPU time per step)\n",
             f"{time.strftime('%Y-%m-%d %H:%M')}; torch {torch.__version__}; {cpu_model()}, "
             f"{torch.get_num_threads()} threads; batch {settings.batch}; median of {repeats} interleaved "
             f"profiles of {steps} steps each; wall = the step's wall time under the profiler."]
    if hasattr(os, "getloadavg"):
        parts.append(f"Load average at start: {[round(v, 2) for v in os.getloadavg()]}.")
    for net in nets:
        base, x, y = net_and_data(settings, net)
        cands = [make_candidate(settings, label, base, x, y) for label in labels]
        for c in cands:
            for _ in range(settings.warmup):
                c.step()
        runs: dict[str, list] = {c.label: [] for c in cands}
        for r in range(repeats):
            k = r % len(cands)
            for c in cands[k:] + cands[:k]:
                with tprofile(activities=[ProfilerActivity.CPU]) as prof:
                    tic = time.perf_counter()
                    for _ in range(steps):
                        c.step()
                    wall = (time.perf_counter() - tic) / steps
                ops = {e.key: (e.self_cpu_time_total / steps, e.count / steps) for e in prof.key_averages()}
                runs[c.label].append((ops, wall))
        for label, found in runs.items():
            keys = {k for ops, _ in found for k in ops}
            med = {k: statistics.median(ops.get(k, (0.0, 0))[0] for ops, _ in found) for k in keys}
            calls = {k: max(ops.get(k, (0.0, 0))[1] for ops, _ in found) for k in keys}
            total = sum(med.values())
            wall = statistics.median(w for _, w in found)
            parts.append(f"\n## {net}, {label}: wall {wall * 1e3:.1f} ms/step, self CPU {total / 1e3:.1f} ms/step\n")
            parts.append("| op | calls/step | self ms/step | share |\n|---|---|---|---|")
            for k in sorted(med, key=med.get, reverse=True)[:top]:
                parts.append(f"| `{k}` | {calls[k]:g} | {med[k] / 1e3:.2f} | {100 * med[k] / total:.1f} % |")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def run_benchmark(settings: Settings, log=print, checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Time (and measure the memory of) every candidate on every net; the report dict.
    ``checkpoint(report)``, when given, gets the report so far after each net (a run cut short
    then keeps its finished nets)."""
    if settings.biotorch:
        require_biotorch()
    started = time.perf_counter()
    report = {
        "what": "training step (forward, cross-entropy, backward, SGD step incl. zero_grad) time and "
                "peak memory per learning rule vs plain PyTorch BP; ratio = median over rounds of "
                "rule time / BP time in the same round",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "torch": torch.__version__, "alignlab": getattr(alignlab, "__version__", "?"),
        "device": settings.device, "quick": settings.quick, "machine": machine(),
        "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)",
        "macs_measure": "multiply-accumulates of one whole step (forward, loss, backward, SGD step), counted "
                        "after the timed rounds by torch.utils.flop_counter.FlopCounterMode (its FLOPs / 2); "
                        "it counts matmuls, convolutions (forward and backward) and attention, not "
                        "element-wise ops (activations, norms, the SGD step, feedback rebuilds, draws)"
        if settings.macs else None,
        "speed_targets": SPEED_TARGETS,
        "memory_target": f"peak <= BP peak + feedback bytes + {MEMORY_SLACK:.0%} of BP's training memory, "
                         "checked as training(rule) - training(BP) <= feedback + 5 % of training(BP), "
                         "training = peak - start of the same process",
        "memory_measure": "cuda max_memory_allocated" if settings.device.startswith("cuda")
        else "peak RSS (VmHWM) of a fresh subprocess per (net, model), its peak mark reset after "
             "the net and inputs are built (start = RSS then)",
        "nets": {},
    }
    if settings.biotorch:
        from importlib.metadata import version
        report["biotorch"] = version("biotorch")
    if any(net in settings.compile_nets for net in settings.nets):
        settings, info = resolve_compile_backend(settings, log)
        if "error" in info:
            settings = replace(settings, compile_nets=[])
        report["compile"] = {
            **info, "nets": [n for n in settings.nets if n in settings.compile_nets],
            "rules": compiled_rules(settings),
            "what": "torch.compile of the converted model's forward (its backward compiled with it by "
                    "AOTAutograd); the loss, backward() call and SGD step stay eager. fullgraph=True is tried "
                    "first; where dynamo refuses it the model is compiled without, and graph breaks = graphs "
                    "dynamo compiled in the first step - 1. Compile time = first step (the fullgraph attempt "
                    "included) + warm-up beyond its steps x its fastest step; it is not in the timed rounds. "
                    "MACs: the eager twin's count (the same arithmetic). Memory: not measured.",
        }
    for net in settings.nets:
        tic = time.perf_counter()
        log(f"{net}: timing {', '.join(candidate_labels(settings, net))}")
        entry = time_interleaved(settings, net, log)
        entry["timing_s"] = time.perf_counter() - tic
        if settings.memory:
            tic = time.perf_counter()
            labels = [lab for lab, r in entry["results"].items() if "error" not in r and r["kind"] != "compiled"]
            memory_verdicts(measure_memory(settings, net, labels, log), entry["results"])
            entry["memory_s"] = time.perf_counter() - tic
        report["nets"][net] = entry
        log(format_net(net, entry))
        report["elapsed_s"] = time.perf_counter() - started
        if hasattr(os, "getloadavg"):
            report["machine"]["loadavg_at_end"] = list(os.getloadavg())
        if checkpoint is not None:
            checkpoint(report)
    return report


def _mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def _signed_mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:+.1f}"


def _macs(n) -> str:
    """A MAC count in G, M or k."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n}"


def format_net(net: str, entry: dict) -> str:
    """One Markdown table for one net, and the lines on missed speed targets under it."""
    counts = sorted({r["steps_per_visit"] for r in entry["results"].values() if "steps_per_visit" in r})
    visits = f"{counts[0]}–{counts[-1]}" if len(counts) > 1 else f"{counts[0] if counts else 0}"
    head = (f"### {net} ({entry['model']}, input {'×'.join(map(str, entry['in_shape']))}, batch {entry['batch']}"
            f"{', norm ' + entry['norm'] if entry['norm'] else ''}): {entry['rounds']} rounds, "
            f"visits of {visits} step(s)\n\n"
            "| rule | ms/step | time ratio to BP (IQR) | MACs/step | MAC ratio to BP = limit | time − limit | "
            "speed target | speed holds? | peak MiB (training) | Δ vs BP MiB | "
            "feedback MiB | other feedback MiB | memory holds? |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    missed = []
    for label, r in entry["results"].items():
        if r.get("kind") == "compiled":
            continue
        if "error" in r:
            rows.append(f"| {label} | – | not run: {r['error']} | | | | | | | | | | |")
            continue
        name = "BP (plain PyTorch)" if label == REFERENCE else label
        ratio = f"{r['median_ratio']:.3f} ({r['ratio_iqr'][0]:.2f}–{r['ratio_iqr'][1]:.2f})"
        if label == REFERENCE:
            ratio = "1"
        if "macs" in r:
            mac_cells = [_macs(r["macs"]), "–", "–"]
            if "mac_ratio" in r:
                mac_cells[1:] = [f"{r['mac_ratio']:.3f}", f"{r['time_over_limit']:+.3f}"]
            if label == REFERENCE:
                mac_cells[1:] = ["1", ""]
        else:
            mac_cells = ["not counted" if "macs_error" in r else "–", "–", "–"]
        target = "report only" if r["speed_target"] is None else f"≤ {r['speed_target']:.2f}×"
        if label == REFERENCE:
            target = "reference"
        holds = "" if r["speed_holds"] is None else ("yes" if r["speed_holds"] else "**no**")
        if r["speed_holds"] is False:
            missed.append(_missed_line(label, r, r["median_ratio"], "time ratio"))
        m = r.get("memory", {})
        if "error" in m:
            mem_cells = ["error", "", "", "", ""]
        else:
            other = m.get("derived_bytes", 0) + m.get("feedback_grad_bytes", 0) + m.get("feedback_optimizer_bytes", 0)
            if "holds" in m:
                mh = "yes" if m["holds"] else ("**no**" + (" (yes counting other feedback)"
                                                           if m.get("holds_counting_all_feedback") else ""))
            else:
                mh = ""
            peak = _mib(m.get("peak_bytes"))
            if m.get("training_bytes") is not None:
                peak += f" ({_signed_mib(m['training_bytes'])})"
            mem_cells = [peak, _signed_mib(m.get("delta_vs_bp_bytes")),
                         _mib(m.get("feedback_bytes")) if m else "–", _mib(other) if m else "–", mh]
        rows.append(f"| {name} | {r['median_ms']:.1f} | {ratio} | " + " | ".join(mac_cells)
                    + f" | {target} | {holds} | " + " | ".join(mem_cells) + " |")
    if missed:
        rows.append("")
        rows.extend(f"Target missed: {line}." for line in missed)
    compiled = {label: r for label, r in entry["results"].items() if r.get("kind") == "compiled"}
    if compiled:
        rows.append("")
        rows.append(format_compiled(compiled))
    return "\n".join(rows) + "\n"


def _target_text(r: dict) -> str:
    return f"{'<' if r.get('speed_target_strict') else '≤'} {r['speed_target']:.2f}"


def _missed_line(label: str, r: dict, ratio: float, ratio_name: str) -> str:
    """One "Target missed" line: the ratio, its target, and how far the arithmetic limit is."""
    target, strict = r["speed_target"], r.get("speed_target_strict", False)
    line = f"{label}: {ratio_name} {ratio:.3f} against its target {_target_text(r)}"
    if "mac_ratio" in r:
        limit = r["mac_ratio"]
        counted = f", counted on the eager {r['macs_counted_on']}" if "macs_counted_on" in r else ""
        line += (f"; arithmetic limit (MAC ratio{counted}) {limit:.3f}, {ratio_name} − limit {ratio - limit:+.3f}"
                 + ("; the target is below the limit: out of reach by arithmetic alone"
                    if (target <= limit if strict else target < limit) else
                    f"; the arithmetic allows the target (the limit is {target - limit:.3f} below it)"))
    return line


def format_compiled(results: dict) -> str:
    """The compiled rows of one net: a second table, timed in the same rounds as the first."""
    backends = sorted({r["backend"] for r in results.values() if "backend" in r})
    rows = [f"Compiled (torch.compile, backend {', '.join(backends) or '–'}; timed in the same rounds):\n",
            "| model | ms/step | time ratio to BP (IQR) | time ratio to compiled BP (IQR) | MACs/step (eager twin) | "
            "MAC ratio to BP = limit | time (to compiled BP) − limit | speed target (to compiled BP) | "
            "speed holds? | fullgraph? | compile s | memory |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    missed, broken = [], []
    for label, r in results.items():
        if "error" in r:
            rows.append(f"| {label} | – | not run: {r['error']} | | | | | | | | | |")
            continue
        ref = label == COMPILED_REFERENCE
        name = "BP (plain PyTorch) + compile" if ref else label
        ratio = f"{r['median_ratio']:.3f} ({r['ratio_iqr'][0]:.2f}–{r['ratio_iqr'][1]:.2f})"
        ratio_c = "1" if ref else (f"{r['median_ratio_compiled']:.3f} "
                                   f"({r['ratio_iqr_compiled'][0]:.2f}–{r['ratio_iqr_compiled'][1]:.2f})")
        if "macs" in r:
            mac_cells = [_macs(r["macs"]), "–", "–"]
            if "mac_ratio" in r:
                mac_cells[1:] = [f"{r['mac_ratio']:.3f}", f"{r['time_over_limit_compiled']:+.3f}"]
            if ref:
                mac_cells[1:] = ["1", ""]
        else:
            mac_cells = ["–", "–", "–"]
        target = "reference" if ref else ("report only" if r["speed_target"] is None else f"{_target_text(r)}×")
        holds = "" if r["speed_holds"] is None else ("yes" if r["speed_holds"] else "**no**")
        if r["speed_holds"] is False:
            missed.append(_missed_line(label, r, r["median_ratio_compiled"], "time ratio to compiled BP"))
        graph = "yes" if r["fullgraph"] else f"**no**: graph breaks: {r['graph_breaks']}"
        recompiled = r.get("recompiles_timed", 0)
        if recompiled:
            graph += f"; {recompiled} recompile(s) in the timed rounds"
        if not r["fullgraph"]:
            broken.append(f"{label}: graph breaks: {r['graph_breaks']} ({r['graphs']} graphs); "
                          f"fullgraph=True raised {r.get('fullgraph_error', '?')}")
        rows.append(f"| {name} | {r['median_ms']:.1f} | {ratio} | {ratio_c} | " + " | ".join(mac_cells)
                    + f" | {target} | {holds} | {graph} | {r['compile_s']:.1f} | not measured |")
    if missed or broken:
        rows.append("")
        rows.extend(f"Target missed: {line}." for line in missed)
        rows.extend(f"Not fullgraph: {line}" for line in broken)
    return "\n".join(rows)


def to_markdown(report: dict) -> str:
    mach = report["machine"]
    lines = [
        "# Training-step speed and peak memory per rule" + (" (--quick)" if report["quick"] else ""),
        "",
        f"{report['date']}; torch {report['torch']}; {report['device']}; {mach['cpu']}, "
        f"{mach['cpu_count']} CPUs, {mach['torch_threads']} torch threads; {mach['platform']}."
        + (f" BioTorch {report['biotorch']}." if "biotorch" in report else ""),
        f"Load average at start {mach.get('loadavg_at_start')}, at end {mach.get('loadavg_at_end')}; "
        f"whole run {report['elapsed_s']:.0f} s."
        + (f" Eager speed targets: the per-net table of {report['rejudged']}, applied to this run's "
           "measurements afterwards (`--rejudge`)." if report.get("rejudged") else ""),
        "",
        "Step = forward, cross-entropy, backward, " + report["optimizer"] + " step (zero_grad included). "
        "Ratio = median over rounds of (time / plain-PyTorch BP's time in the same round); IQR = "
        "25th–75th percentile of those per-round ratios. `bp` is alignlab's bp rule (a converted model "
        "running exact transport): its ratio shows the noise floor. "
        + ("MACs/step = " + report["macs_measure"] + "; MAC ratio = MACs / plain BP's MACs: the arithmetic "
           "limit of the time ratio (what it would be if time went as MACs); time − limit = time ratio − "
           "MAC ratio. " if report.get("macs_measure") else "MACs not counted (--no-macs). ")
        + "Peak = " + report["memory_measure"]
        + "; training = peak - start; Δ vs BP = training(rule) - training(BP)"
        + "; memory target: " + report["memory_target"] + "; feedback = state-dict entries under "
        "`feedback.` (BioTorch: `weight_backward`/`bias_backward`); other feedback = tensors derived "
        "from W each step (sign rules' B) + gradients and SGD momentum of learned feedback (kp).",
        "",
    ]
    comp = report.get("compile")
    if comp:
        backend = comp["backend"] + (f" (asked for {comp['asked_backend']}, which does not work here: "
                                     f"{comp['fallback_reason']})" if "fallback_reason" in comp else "")
        lines += [
            f"Compiled rows ({', '.join(comp['nets']) or 'none'}; backend {backend}"
            + (f"; not run: {comp['error']}" if "error" in comp else "") + "): "
            + comp["what"] + " Their targets are on the ratio to compiled plain BP (`torch+compile`): "
            + ", ".join(f"{rule} {'<' if strict else '≤'} {bound:.2f}×" for rule, (bound, strict)
                        in COMPILED_TARGETS.items()) + ".",
            "",
        ]
    for net, entry in report["nets"].items():
        lines.append(format_net(net, entry))
    return "\n".join(lines)


def rejudge(report: dict) -> dict:
    """``report`` with every eager alignlab row's speed target and verdict recomputed from
    today's SPEED_TARGETS and the row's own measured ratio and MAC ratio (no measurement
    changes): a run made before the targets changed, judged by the current ones."""
    for net, entry in report["nets"].items():
        for label, r in entry["results"].items():
            if r.get("kind") != "alignlab" or "median_ratio" not in r:
                continue
            target = speed_target(net, label, r.get("mac_ratio"))
            r["speed_target"], r["speed_target_strict"] = target, False
            r["speed_holds"] = None if target is None else r["median_ratio"] <= target
    report["speed_targets"] = SPEED_TARGETS
    report["rejudged"] = time.strftime("%Y-%m-%d", time.gmtime())
    return report


def write_outputs(report: dict, out_dir: Path, stem: str | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or ("speed-quick" if report["quick"] else "speed")
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(report, indent=1) + "\n")
    md.write_text(to_markdown(report))
    return js, md


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default: mlp/lenet 30, resnet20/vit 20)")
    p.add_argument("--nets", default=DEFAULT_NETS, help=f"comma-separated: {', '.join(NETS)} (default {DEFAULT_NETS})")
    p.add_argument("--rules", default=None, help="comma-separated alignlab rules (default: all registered)")
    p.add_argument("--biotorch", action="store_true", help=f"also time BioTorch 0.0.16 fa/usf/dfa ({BIOTORCH_PIP})")
    p.add_argument("--quick", action="store_true", help="tiny nets, 2 rounds, no visit batching (for tests)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--no-macs", action="store_true", help="skip counting each model's MACs per step")
    p.add_argument("--rejudge", metavar="JSON", default=None,
                   help="time nothing: rewrite JSON and its .md with the current speed targets (measurements unchanged)")
    p.add_argument("--compile", nargs="?", const="all", default=None, metavar="NETS",
                   help="add compiled rows (torch+compile and <rule>+compile) on these nets, comma-separated; "
                        "alone: on every net timed (default: " + ",".join(DEFAULT_COMPILE_NETS)
                        + "; none with --quick)")
    p.add_argument("--no-compile", action="store_true", help="no compiled rows")
    p.add_argument("--compile-rules", default=None,
                   help="comma-separated: the rules that get compiled rows (default: every rule timed)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor; aot_eager when inductor does not work here)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the benchmark, profile a few steps of BP and each rule (default fa, dfa) "
                        "and write speed-profile.md")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per model (default 3, --quick 1)")
    p.add_argument("--memory-warmup", type=int, default=1, help="warm-up steps in a memory run (default 1)")
    p.add_argument("--memory-steps", type=int, default=2, help="steps after warm-up in a memory run (default 2)")
    p.add_argument("--memory-jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="memory workers run at once (default: 2, or 1 on one CPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--memory-worker", nargs=2, metavar=("NET", "LABEL"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in nets if n not in NETS]
    if bad:
        fail(f"unknown net(s) {', '.join(bad)}; choose from {', '.join(NETS)}")
    available = alignlab.rules.available()
    rules = available if args.rules is None else [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in available]
    if bad:
        fail(f"unknown rule(s) {', '.join(bad)}; available: {', '.join(available)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick
    if args.no_compile:
        compile_nets = []
    elif args.compile is None:  # the default: a full run compiles the small nets, --quick none
        compile_nets = [] if quick else [n for n in nets if n in DEFAULT_COMPILE_NETS]
    elif args.compile == "all":
        compile_nets = list(nets)
    else:
        compile_nets = [n.strip() for n in args.compile.split(",") if n.strip()]
        bad = [n for n in compile_nets if n not in NETS]
        if bad:
            fail(f"unknown net(s) {', '.join(bad)} in --compile; choose from {', '.join(NETS)}")
        missing = [n for n in compile_nets if n not in nets]
        if missing:
            fail(f"--compile {', '.join(missing)}: not among --nets {','.join(nets)}")
    compile_rules = None
    if args.compile_rules is not None:
        compile_rules = [r.strip() for r in args.compile_rules.split(",") if r.strip()]
        bad = [r for r in compile_rules if r not in rules]
        if bad:
            fail(f"--compile-rules {', '.join(bad)}: not among the rules timed ({', '.join(rules)})")
    return Settings(nets=nets, rules=rules, biotorch=args.biotorch,
                    rounds=args.rounds if args.rounds is not None else (2 if quick else None),
                    warmup=args.warmup if args.warmup is not None else (1 if quick else 3),
                    memory_warmup=args.memory_warmup, memory_steps=args.memory_steps,
                    memory_jobs=args.memory_jobs,
                    batch=args.batch if not quick or args.batch != 128 else 16,
                    memory=not args.no_memory, macs=not args.no_macs, quick=quick, device=device, seed=args.seed,
                    compile_nets=compile_nets, compile_rules=compile_rules, compile_backend=args.compile_backend)


def main(argv=None) -> None:
    args = parse_args(argv)
    settings = settings_from(args)
    if args.memory_worker:
        net, label = args.memory_worker
        print(json.dumps(memory_worker(settings, net, label)))
        return
    if args.rejudge:
        path = Path(args.rejudge)
        js, md = write_outputs(rejudge(json.loads(path.read_text())), path.parent, path.stem)
        print(f"rewrote {js} and {md} with the current speed targets")
        return
    if settings.biotorch:
        require_biotorch()
    if args.profile:
        labels = [REFERENCE, *(args.rules.split(",") if args.rules else ("fa", "dfa"))]
        if settings.biotorch:
            labels += [f"biotorch-{m}" for m in BIOTORCH_MODES]
        text = profile(settings, settings.nets, labels)
        path = Path(args.out_dir) / ("speed-profile-quick.md" if settings.quick else "speed-profile.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
        return
    report = run_benchmark(settings, checkpoint=lambda r: write_outputs(r, Path(args.out_dir)))
    js, md = write_outputs(report, Path(args.out_dir))
    print(f"wrote {js} and {md} ({report['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
