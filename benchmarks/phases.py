"""Where a training step's time goes, phase by phase: forward (with the loss), backward, optimizer.

    python benchmarks/phases.py        # about 1 min on 2 CPU cores; --quick for the tests

The speed benchmark times whole steps. This splits them, for plain-PyTorch BP and each rule
asked for (default ldfa, ldfa without P's Oja step, ldfa with P and Q fixed, dfa, fa; a rule
with options is written ``name:key=value:...``, e.g. ``ldfa:learn_p=false``), on the wide MLP of the speed table (784-1024-1024-10, batch
128) and on the same MLP at width 16, where the arithmetic vanishes and what is left is each
rule's fixed cost per step (Python autograd Functions, feedback updates, extra parameters in the
optimizer). Models are timed interleaved, one step each per round, SGD(lr=0.01, momentum=0.9,
weight_decay=1e-4) as in speed.py; medians over the rounds after a warm-up.

It backs one argument of the README: on the wide MLP, BP's forward and optimizer step are the
same for every rule, so a rule that removes an input-gradient matmul can gain at most that
matmul's share of BP's step; the bound and each rule's fixed cost are printed.

Writes benchmarks/results/phases.json and phases.md (phases-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from alignlab import convert, models
from alignlab.train.config import parse_override

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("forward", "backward", "optimizer")


DEFAULT_RULES = "ldfa,ldfa:learn_p=false,ldfa:learn_p=false:learn_q=false,dfa,fa"


def rule_spec(spec: str) -> tuple[str, dict]:
    """``"ldfa:learn_p=false:rank=5"`` → ("ldfa", {"learn_p": False, "rank": 5})."""
    name, *pairs = spec.split(":")
    options = {}
    for pair in pairs:
        try:
            (key,), value = parse_override(pair)  # a YAML scalar, as every key=value in alignlab
        except ValueError:
            raise SystemExit(f"phases.py: error: rule option {pair!r} in {spec!r} is not key=value") from None
        options[key] = value
    return name, options


def build(width: int, rules: list[str]) -> dict:
    torch.manual_seed(0)
    base = models.build("mlp", in_shape=(1, 28, 28), num_classes=10, depth=2, width=width)
    nets = {}
    for rule in ["torch", *rules]:
        if rule == "torch":
            net = copy.deepcopy(base)
        else:
            name, options = rule_spec(rule)
            net = convert(copy.deepcopy(base), rule=name, **options)
        nets[rule] = (net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    return nets


def time_phases(nets: dict, batch: int, rounds: int, warmup: int) -> dict:
    """{label: {phase: median ms}} over ``rounds`` interleaved steps after ``warmup``."""
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    times = {label: {p: [] for p in PHASES} for label in nets}
    for r in range(warmup + rounds):
        for label, (net, opt) in nets.items():
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if r >= warmup:
                for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)):
                    times[label][p].append(1e3 * dt)
    return {label: {p: statistics.median(v) for p, v in t.items()} for label, t in times.items()}


def input_grad_ms(width: int, batch: int, rounds: int) -> float:
    """BP's input-gradient matmul of the middle layer (batch × width @ width × width), in ms."""
    g, w = torch.randn(batch, width), torch.randn(width, width)
    for _ in range(3):
        g @ w
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        g @ w
        t.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(t)


def run(rules: list[str], widths: list[int], batch: int, rounds: int, warmup: int) -> dict:
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "cpus": __import__("os").cpu_count(),
           "platform": platform.platform(), "batch": batch, "rounds": rounds, "widths": {}}
    for width in widths:
        phases = time_phases(build(width, rules), batch, rounds, warmup)
        bp = phases["torch"]
        total = {k: sum(v.values()) for k, v in phases.items()}
        entry = {"phases_ms": phases, "total_ms": total,
                 "extra_over_bp_ms": {k: total[k] - total["torch"] for k in total if k != "torch"},
                 "shared_share": (bp["forward"] + bp["optimizer"]) / total["torch"]}
        if width > 16:
            mm = input_grad_ms(width, batch, rounds)
            entry["input_grad_mm_ms"] = mm
            entry["bound_without_that_mm"] = (total["torch"] - mm) / total["torch"]
        out["widths"][str(width)] = entry
    return out


def to_markdown(r: dict) -> str:
    lines = ["# A training step, phase by phase (MLP 784-w-w-10)", "",
             f"{r['date']}; torch {r['torch']}; {r['cpus']} CPUs, {r['threads']} threads; batch {r['batch']}, "
             f"medians of {r['rounds']} interleaved steps. Command: `python benchmarks/phases.py`.", ""]
    for width, e in r["widths"].items():
        rows = [f"| {k} | " + " | ".join(f"{v[p]:.2f}" for p in PHASES) + f" | {e['total_ms'][k]:.2f} | "
                + ("" if k == "torch" else f"{e['extra_over_bp_ms'][k]:+.2f}") + " |" for k, v in e["phases_ms"].items()]
        lines += [f"## width {width}", "", "| model | forward ms | backward ms | optimizer ms | step ms | vs BP ms |",
                  "|---|---:|---:|---:|---:|---:|", *rows, "",
                  f"BP's forward + optimizer step: {100 * e['shared_share']:.0f} % of its step (the same work for "
                  "every rule)."]
        if "input_grad_mm_ms" in e:
            lines.append(f"The middle layer's input-gradient matmul alone: {e['input_grad_mm_ms']:.2f} ms; a rule "
                         f"that removes it and adds nothing runs at {e['bound_without_that_mm']:.3f}× BP at best.")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="width 8 and 32, 3 rounds: check it runs")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    widths, rounds, warmup = ([32, 8], 3, 1) if args.quick else ([1024, 16], args.rounds, 10)
    r = run(args.rules.split(","), widths, 128, rounds, warmup)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "phases-quick" if args.quick else "phases"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / f"{stem}.md").write_text(to_markdown(r))
    print(f"wrote {out / stem}.md and .json")


if __name__ == "__main__":
    main()
