"""Each rule's forward/backward under bf16 autocast and under torch.compile, against eager fp32
(step 2 of benchmarks/gpu_check.sh).

Nets: alignlab.testing's small CNN (bars 8×8, batch 16) and tiny transformer (batch 8, 5
tokens, packed attention). Per (rule, net): convert, one eager fp32 step (draws lazily built
feedback such as dfa's B), then from copies of that one model: eager fp32 gradients (the
reference), bf16-autocast gradients, compiled gradients. Writes rules.json and rules.md after
every check, so a run cut short keeps what it did.

Relative error of a gradient: ||g − g_fp32|| / max(||g_fp32||, FLOOR × the largest reference
gradient's norm in the model). The floor keeps a gradient that is zero in exact arithmetic from
judging rounding: ldfa's P at r = N_out (a layer with 10 or fewer outputs), whose Oja step
PC(I − PᵀP) vanishes for square orthogonal P, is about 1e-7 in fp32, and inductor's different
order of summation changes it by as much (the first GPU run failed on exactly that). ldfa runs
at rank 2 here (``OPTIONS``), so that its P learns in every layer and the check means something.

    python benchmarks/gpu_rules.py --out DIR [--device cuda] [--backend inductor] [--rules fa,dfa]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

import alignlab
from alignlab import testing

FLOOR = 1e-4  # a gradient's error is relative to at least this fraction of the model's largest gradient
# options that make a rule's every gradient non-trivial on these small nets: at ldfa's default
# rank 10 every CNN layer (at most 8 outputs) and the transformer's head (3) have r = N_out, a
# square orthogonal P whose Oja step is zero up to rounding: P's gradient would be checked on rounding alone
OPTIONS = {"ldfa": {"rank": 2}}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="inductor")
    p.add_argument("--rules", default="", help="comma-separated (default: every registered rule)")
    p.add_argument("--out", required=True)
    p.add_argument("--bf16-tol", type=float, default=0.05)
    p.add_argument("--bf16-factor", type=float, default=3.0)
    p.add_argument("--compile-tol", type=float, default=2e-3)
    return p.parse_args(argv)


def nets():
    """(name, model, inputs, targets)."""
    x, y = testing.bars_task(16)
    yield "cnn", testing.small_cnn(), x, y
    g = torch.Generator().manual_seed(0)
    yield "transformer", testing.TinyTransformer(), torch.randn(8, 5, 16, generator=g), torch.randint(0, 3, (8,), generator=g)


def step(model, x, y, bf16=False, call=None):
    """(output dtype, {parameter: gradient}) after one forward/backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        out = (model if call is None else call)(x)
        loss = F.cross_entropy(out.float(), y)
    loss.backward()
    return out.dtype, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def rel_err(got, want, names=None):
    """(max over the parameters ``names`` (default all) of ||got − want|| / max(||want||, FLOOR ×
    the largest ||want||), the worst one's name); a missing, extra, non-fp32 or non-finite
    gradient (of any parameter) is inf."""
    if set(got) != set(want):
        return math.inf, f"gradients of {sorted(set(got) ^ set(want))} in one run only"
    floor = FLOOR * max((float(w.double().norm()) for w in want.values()), default=0.0)
    worst, where = 0.0, ""
    for n, w in want.items():
        g = got[n]
        if g.dtype != torch.float32 or not torch.isfinite(g).all():
            return math.inf, f"{n}: {g.dtype} gradient, finite: {bool(torch.isfinite(g).all())}"
        if names is not None and n not in names:
            continue
        e = float((g.double() - w.double()).norm()) / max(float(w.double().norm()), floor, 1e-30)
        if e > worst:
            worst, where = e, n
    return worst, where


def bf16_floor(base, x, y):
    """Plain PyTorch's own bf16 error on this net (its autocast gradients vs fp32)."""
    model = copy.deepcopy(base).to(x.device)
    _, want = step(copy.deepcopy(model), x, y)
    _, got = step(model, x, y, bf16=True)
    return rel_err(got, want)[0]


def write(a, dev, results, floors):
    out_dir = pathlib.Path(a.out)
    (out_dir / "rules.json").write_text(json.dumps(
        {"device": str(dev), "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
         "backend": a.backend, "torch": torch.__version__, "bf16_tol": a.bf16_tol, "bf16_factor": a.bf16_factor,
         "compile_tol": a.compile_tol, "floor": FLOOR, "torch_bf16_rel_err": floors, "results": results},
        indent=1) + "\n")
    passed = sum(r["passed"] for r in results)
    lines = [f"Each rule on alignlab.testing's small CNN and tiny transformer ({dev}): one forward/backward "
             f"under bf16 autocast and under torch.compile(backend={a.backend!r}), against eager fp32 "
             f"(same weights, same feedback; options {OPTIONS}). Relative error = max over parameters of "
             f"||g - g_fp32|| / max(||g_fp32||, {FLOOR:g} × the net's largest ||g_fp32||) (the floor: a gradient "
             "that is zero in exact arithmetic, such as ldfa's P at r = N_out, differs by rounding alone). "
             "bf16 passes with a bf16 output, finite fp32 gradients "
             f"everywhere and the net's own weights' error within max({a.bf16_tol}, {a.bf16_factor:g} × "
             "plain PyTorch's bf16 error on the same net: "
             + ", ".join(f"{k} {v:.2e}" for k, v in floors.items())
             + "); learned feedback's gradients (kp, pfa, ldfa) are shown, not judged. compile passes "
             f"with every gradient within {a.compile_tol}.", "",
             "| rule | net | check | result | relative error | worst parameter | feedback's | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        res = "PASS" if r["passed"] else "**FAIL**" + (f": {r['error']}" if "error" in r else "")
        err = f"{r['rel_err']:.2e}" if "rel_err" in r else "–"
        fb = f"{r['feedback_rel_err']:.2e}" if r.get("feedback_rel_err") else ""
        lines.append(f"| {r['rule']} | {r['net']} | {r['check']} | {res} | {err} | {r.get('worst', '')} | {fb} | {r['seconds']} |")
    lines += ["", f"{passed} of {len(results)} rule checks passed."]
    (out_dir / "rules.md").write_text("\n".join(lines) + "\n")


def check(a, rule, model, want, weights, floor, x, y, kind) -> dict:
    """One check (``kind``: "bf16" or "compile") of a converted model against its fp32 gradients."""
    twin = copy.deepcopy(model)
    row = {"rule": rule, "check": kind}
    if kind == "bf16":
        dtype, got = step(twin, x, y, bf16=True)
        err, where = rel_err(got, want, weights)
        tol = max(a.bf16_tol, a.bf16_factor * floor)
        row.update(output_dtype=str(dtype).removeprefix("torch."), tol=tol,
                   feedback_rel_err=rel_err(got, want, set(want) - weights)[0])
        ok = dtype == torch.bfloat16 and err <= tol
    else:
        torch._dynamo.reset()
        _, got = step(twin, x, y, call=torch.compile(twin, backend=a.backend))
        err, where = rel_err(got, want)
        row.update(backend=a.backend, tol=a.compile_tol)
        ok = err <= a.compile_tol
    row.update(rel_err=err, worst=where, passed=bool(ok))
    return row


def main(argv=None) -> int:
    a = parse(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda":  # a true fp32 reference: no TF32 in convolutions or matmuls
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    rules = [r for r in a.rules.split(",") if r] or alignlab.rules.available()
    results, floors = [], {}
    for rule in rules:
        for name, base, x, y in nets():
            x, y = x.to(dev), y.to(dev)
            weights = {n for n, _ in base.named_parameters()}  # the net's own parameters, not feedback
            if name not in floors:
                floors[name] = bf16_floor(base, x, y)
            torch.manual_seed(0)
            model = alignlab.convert(base, rule=rule, **OPTIONS.get(rule, {})).to(dev)
            step(model, x, y)
            _, want = step(copy.deepcopy(model), x, y)
            for kind in ("bf16", "compile"):
                tic = time.perf_counter()
                try:
                    row = check(a, rule, model, want, weights, floors[name], x, y, kind)
                except Exception as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    row = {"rule": rule, "check": kind, "passed": False, "error": f"{type(exc).__name__}: {first}"[:300]}
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                row = {"rule": rule, "net": name, **row, "seconds": round(time.perf_counter() - tic, 2)}
                results.append(row)
                print(json.dumps(row), flush=True)
                write(a, dev, results, floors)
    failed = sum(not r["passed"] for r in results)
    print(f"{len(results) - failed} of {len(results)} rule checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
