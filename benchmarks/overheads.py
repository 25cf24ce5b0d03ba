"""The small costs that benchmarks/README.md and the README explain speed ratios with.

    python benchmarks/overheads.py        # about 1 min on 2 CPU cores

1. *Per-layer Python cost*: forward + backward of a stack of 10 tiny layers (Linear 16→16 on
   4 rows; Conv2d 4→4, 3×3, on 2 × 4 × 8 × 8), plain PyTorch vs converted to fa, in µs per
   layer (medians of interleaved repeats): what a Python ``autograd.Function`` adds per layer.
2. *Per-step feedback builds*: time spent in ``feedback.matrix(W)`` per step of a LeNet-5
   training step (batch 128, SGD) for usf, frsf and brsf, next to the whole step.
3. *Random magnitudes*: brsf's 8-bit draw (``draw_magnitudes``) vs one float per weight
   (``torch.rand``), per million weights.
4. *Muon on CPU*: a 256 × 256 matmul in bfloat16 vs float32, and one optimizer step over the
   five hidden 256 × 256 matrices of the 6 × 256 MLP with ``torch.optim.Muon`` (bfloat16
   Newton-Schulz) vs ``alignlab.optim.Muon`` (float32 on CPU).

Writes benchmarks/results/overheads.json and overheads.md.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
try:
    import alignlab
except ImportError:  # a source checkout without installing
    sys.path.insert(0, str(ROOT / "src"))
    import alignlab
from alignlab import models
from alignlab.convert import converted_layers
from alignlab.optim import Muon
from alignlab.rules.brsf import draw_magnitudes
from alignlab.rules.sign import SignFeedback

RESULTS = ROOT / "benchmarks" / "results"


def per_call_us(fn, calls: int, repeats: int = 7) -> float:
    """Median over repeats of the mean time of one call, in µs (after a warm-up)."""
    for _ in range(max(3, calls // 10)):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - tic) / calls * 1e6)
    return statistics.median(times)


def layer_cost() -> dict:
    """µs per layer (forward + backward) of 10 tiny layers, torch vs fa, interleaved."""
    stacks = {"linear": (lambda: nn.Linear(16, 16), torch.randn(4, 16)),
              "conv2d": (lambda: nn.Conv2d(4, 4, 3, padding=1), torch.randn(2, 4, 8, 8))}
    out = {}
    for kind, (make, x) in stacks.items():
        torch.manual_seed(0)
        base = nn.Sequential(*[make() for _ in range(10)])
        nets = {"torch": base, "fa": alignlab.convert(copy.deepcopy(base), rule="fa")}
        samples = {k: [] for k in nets}
        for _ in range(5):
            for k, net in nets.items():
                def step(net=net):
                    net.zero_grad(set_to_none=True)
                    net(x).sum().backward()
                samples[k].append(per_call_us(step, 200, repeats=1) / 10)
        med = {k: statistics.median(v) for k, v in samples.items()}
        out[kind] = {**{f"{k}_us_per_layer": v for k, v in med.items()}, "added_us_per_layer": med["fa"] - med["torch"]}
    return out


def feedback_build_cost() -> dict:
    """Per LeNet training step: ms in feedback.matrix() (sign rules) and ms for the whole step."""
    torch.manual_seed(0)
    base = models.build("lenet", in_shape=(1, 28, 28), num_classes=10)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    spent = [0.0]
    original = SignFeedback.matrix

    def timed(self, weight):
        tic = time.perf_counter()
        result = original(self, weight)
        spent[0] += time.perf_counter() - tic
        return result

    out = {}
    SignFeedback.matrix = timed
    try:
        for rule in ("usf", "frsf", "brsf"):
            net = alignlab.convert(copy.deepcopy(base), rule=rule)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

            def step():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()

            for _ in range(5):
                step()
            spent[0], steps = 0.0, 40
            tic = time.perf_counter()
            for _ in range(steps):
                step()
            total = (time.perf_counter() - tic) / steps * 1e3
            layers = len(converted_layers(net))
            build = spent[0] / steps * 1e3
            out[rule] = {"step_ms": total, "build_ms": build, "build_us_per_layer": build / layers * 1e3,
                         "layers": layers, "share": build / total}
    finally:
        SignFeedback.matrix = original
    return out


def draw_cost() -> dict:
    """ms per million weights: brsf's 8-bit draw vs a float per weight."""
    w = torch.empty(1000, 1000)
    g = torch.Generator().manual_seed(0)
    return {"draw_magnitudes_ms_per_million": per_call_us(lambda: draw_magnitudes(w, 0.05, g), 20) / 1e3,
            "torch_rand_ms_per_million": per_call_us(lambda: torch.rand(w.shape, generator=g), 20) / 1e3}


def muon_cost() -> dict:
    a = torch.randn(256, 256)
    b = a.bfloat16()
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(256, 256) / 16) for _ in range(5)]
    out = {"matmul_fp32_ms": per_call_us(lambda: a @ a, 20) / 1e3,
           "matmul_bf16_ms": per_call_us(lambda: b @ b, 5, repeats=3) / 1e3}
    for name, cls in (("torch_muon_step_ms", torch.optim.Muon), ("alignlab_muon_step_ms", Muon)):
        ps = [nn.Parameter(p.detach().clone()) for p in params]
        opt = cls(ps, lr=0.01)
        for p in ps:
            p.grad = torch.randn_like(p)
        out[name] = per_call_us(opt.step, 2, repeats=3) / 1e3
    return out


def markdown(r: dict) -> str:
    lc, fb, dr, mu = r["layer_cost"], r["feedback_build"], r["draw"], r["muon"]
    lines = ["# Small costs behind the speed ratios", "",
             f"{r['date']}; torch {r['torch']}; {r['machine']}. Command: `python benchmarks/overheads.py`.", "",
             "| what | figure |", "|---|---|"]
    for kind, v in lc.items():
        lines.append(f"| tiny {kind}, forward + backward per layer: torch / fa / added by fa | "
                     f"{v['torch_us_per_layer']:.0f} / {v['fa_us_per_layer']:.0f} / {v['added_us_per_layer']:.0f} µs |")
    for rule, v in fb.items():
        lines.append(f"| LeNet-5 step, {rule}: feedback.matrix() per step (per layer) / whole step | "
                     f"{v['build_ms']:.2f} ms ({v['build_us_per_layer']:.0f} µs) / {v['step_ms']:.1f} ms "
                     f"({100 * v['share']:.1f} %) |")
    lines.append(f"| random magnitudes per million weights: brsf's 8-bit draw / torch.rand | "
                 f"{dr['draw_magnitudes_ms_per_million']:.2f} / {dr['torch_rand_ms_per_million']:.2f} ms |")
    lines.append(f"| 256 × 256 matmul: float32 / bfloat16 | {mu['matmul_fp32_ms']:.2f} / {mu['matmul_bf16_ms']:.1f} ms |")
    lines.append(f"| Muon step, 5 × (256 × 256): torch.optim.Muon / alignlab.optim.Muon | "
                 f"{mu['torch_muon_step_ms']:.0f} / {mu['alignlab_muon_step_ms']:.0f} ms |")
    return "\n".join(lines) + "\n"


def main() -> None:
    tic = time.perf_counter()
    r = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
         "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
         "layer_cost": layer_cost(), "feedback_build": feedback_build_cost(), "draw": draw_cost(),
         "muon": muon_cost()}
    r["seconds"] = time.perf_counter() - tic
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overheads.json").write_text(json.dumps(r, indent=1) + "\n")
    (RESULTS / "overheads.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
