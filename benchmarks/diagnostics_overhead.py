"""What the default diagnostics schedule costs: whole training runs with diagnostics on and
off, interleaved in one process (on, off, on, off, ...), on Fashion-MNIST.

    python benchmarks/diagnostics_overhead.py [--rounds 3] [--epochs 1]

Writes benchmarks/results/diagnostics_overhead.json: per model, the median over rounds of
(time with diagnostics) / (time without), each run's wall time included whole (data loading
excluded: the dataset is loaded once).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alignlab.train import load_config, train

OUT = Path(__file__).parent / "results" / "diagnostics_overhead.json"


def timed_run(model: str, diagnostics: bool, epochs: int, out_dir: str, tag: str) -> float:
    cfg = load_config(None, [f"model.name={model}", "rule=fa", f"epochs={epochs}", "progress=false",
                             f"diagnostics.enabled={str(diagnostics).lower()}", f"out_dir={out_dir}", f"name={tag}"])
    tic = time.perf_counter()
    train(cfg)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default="mlp,lenet")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for model in args.models.split(","):
            ratios, on_times, off_times = [], [], []
            for r in range(args.rounds):
                on = timed_run(model, True, args.epochs, out_dir, f"{model}-on-{r}")
                off = timed_run(model, False, args.epochs, out_dir, f"{model}-off-{r}")
                ratios.append(on / off)
                on_times.append(on)
                off_times.append(off)
                print(f"{model} round {r}: on {on:.2f} s, off {off:.2f} s, ratio {on / off:.3f}", flush=True)
            results[model] = {"median_ratio": statistics.median(ratios), "ratios": ratios,
                              "seconds_on": on_times, "seconds_off": off_times}
    report = {"what": "training time with the default diagnostics schedule / without, fa, Fashion-MNIST",
              "epochs_per_run": args.epochs, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "results": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
