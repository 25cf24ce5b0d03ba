"""ldfa's Oja step for P by its two routes, timed side by side, with the route the rule picks.

    python benchmarks/oja_routes.py      # about 20 s on 2 CPU cores; --quick for the tests

P's gradient (Oja's subspace rule on a layer's output errors, ``alignlab.rules.ldfa.oja_step``)
can come from the error rows with h = δPᵀ (the row route) or from the errors' second moments
Σδδᵀ (the moment route, :func:`alignlab.rules.ldfa.oja_from_moments`). The rule picks one per
call by ``moments_cheaper``, a cost model whose one constant (``ROW_PASS_COST``) was fitted to
times like these. Each case times both routes interleaved, ``"batch"`` normalisation, h given
as the factored backward gives it; the table says which was faster and which the rule picks.

Writes benchmarks/results/oja_routes.json and oja_routes.md (oja_routes-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from alignlab.rules import ldfa

RESULTS = Path(__file__).resolve().parent / "results"
# (error shape, rank r, units' dim): LeNet's and ResNet-20's conv outputs, the wide MLP's hidden
# layers, LeNet's fc layers, and in-between shapes where the routes cross over
CASES = [((128, 6, 28, 28), 6, 1), ((128, 16, 10, 10), 10, 1), ((128, 16, 32, 32), 10, 1),
         ((128, 32, 16, 16), 10, 1), ((128, 64, 8, 8), 10, 1), ((128, 64, 8, 8), 2, 1),
         ((128, 128, 8, 8), 10, 1), ((128, 256, 4, 4), 10, 1), ((8192, 64), 10, -1),
         ((128, 1024), 10, -1), ((128, 120), 10, -1), ((128, 84), 10, -1)]
QUICK = [((4, 6, 5, 5), 3, 1), ((16, 300), 2, -1)]


def time_case(shape, r: int, dim: int, rounds: int) -> dict:
    torch.manual_seed(0)
    delta = torch.randn(shape)
    N = shape[dim]
    P = torch.linalg.qr(torch.randn(N, r))[0].mT.contiguous()
    h = torch.nn.functional.conv2d(delta, P.view(r, N, 1, 1)) if dim == 1 else delta @ P.mT
    times = {"moments": [], "rows": []}
    try:
        for _ in range(rounds):
            for route, ms in times.items():
                ldfa.OJA_ROUTE = route
                start = time.perf_counter()
                ldfa.oja_step(P, delta, "batch", h, 1.0, dim)
                ms.append((time.perf_counter() - start) * 1e3)
    finally:
        ldfa.OJA_ROUTE = None
    n = delta.numel() // N
    med = {route: statistics.median(ms[1:] or ms) for route, ms in times.items()}
    return {"shape": list(shape), "rank": r, "units": N, "rows": n, "ms": med,
            "faster": min(med, key=med.get), "picked": "moments" if ldfa.moments_cheaper(n, N, r, "batch") else "rows"}


def to_markdown(r: dict) -> str:
    rows = [f"| {tuple(c['shape'])} | {c['units']} | {c['rank']} | {c['ms']['moments']:.3f} | {c['ms']['rows']:.3f} | "
            f"{c['faster']} | {c['picked']} |" for c in r["cases"]]
    picked_slower = [c for c in r["cases"] if c["faster"] != c["picked"]]
    worst = max((c["ms"][c["picked"]] / c["ms"][c["faster"]] for c in picked_slower), default=1.0)
    return "\n".join([
        "# ldfa's Oja step: moment route vs row route", "",
        f"{r['date']}; torch {r['torch']}; {r['cpus']} CPUs, {r['threads']} threads; load average at start "
        f"{r['load'][0]:.2f}; medians of {r['rounds']} interleaved calls, `\"batch\"` normalisation. "
        "Command: `python benchmarks/oja_routes.py`.", "",
        "| error shape | units N | rank r | moments ms | rows ms | faster | picked |", "|---|---:|---:|---:|---:|---|---|",
        *rows, "",
        f"Picked the slower route in {len(picked_slower)} of {len(r['cases'])} cases; there, the pick took "
        f"{worst:.2f}× the faster route's time.", ""])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--quick", action="store_true", help="two tiny cases, 3 rounds: check it runs")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    cases, rounds = (QUICK, 3) if args.quick else (CASES, args.rounds)
    r = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "torch": torch.__version__, "cpus": os.cpu_count(),
         "threads": torch.get_num_threads(), "machine": platform.platform(), "load": list(os.getloadavg()),
         "rounds": rounds, "cases": [time_case(*c, rounds) for c in cases]}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "oja_routes-quick" if args.quick else "oja_routes"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / f"{stem}.md").write_text(to_markdown(r))
    print(to_markdown(r))


if __name__ == "__main__":
    main()
