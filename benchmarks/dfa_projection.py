"""Which default for dfa's ``project`` option: accuracy of each projection on a real task.

LeNet-5 on Fashion-MNIST (the setting where BioTorch's conv DFA, which broadcasts the error
over positions, beat alignlab's dense DFA), 3 epochs, Adam lr 1e-3, batch 128, the lab's own
training loop, each seed for both projections:

    python benchmarks/dfa_projection.py [--epochs 3] [--seeds 0,1] [--model lenet]

Writes benchmarks/results/dfa_projection.{json,md}: final test accuracy per seed, the mean and
the spread, and the difference broadcast − dense per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from alignlab.train import load_config
from alignlab.train.loop import train
from alignlab.train.rundir import SUMMARY

OUT = Path(__file__).parent / "results" / "dfa_projection"
MODES = ("broadcast", "dense")


def run(model: str, mode: str, seed: int, epochs: int, out_dir: str) -> float:
    cfg = load_config("configs/fashion-mnist-lenet.yaml", [
        f"model.name={model}", "rule=dfa", f"rule_options.project={mode}", f"seed={seed}", f"epochs={epochs}",
        "progress=false", "device=cpu", "diagnostics.enabled=false", f"out_dir={out_dir}", f"name={mode}-s{seed}"])
    run_dir = train(cfg)
    return json.loads((run_dir / SUMMARY).read_text())["final"]["test_acc"] * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--model", default="lenet")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    acc = {m: [] for m in MODES}
    tic = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for mode in MODES:
                acc[mode].append(run(args.model, mode, seed, args.epochs, tmp))
                print(f"{mode} seed {seed}: {acc[mode][-1]:.2f} %", flush=True)
    diff = [b - d for b, d in zip(acc["broadcast"], acc["dense"])]
    result = {"model": args.model, "epochs": args.epochs, "seeds": seeds, "test_acc": acc,
              "broadcast_minus_dense": diff, "seconds": round(time.time() - tic)}
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [f"| {m} | " + " | ".join(f"{a:.2f}" for a in acc[m]) + f" | {statistics.mean(acc[m]):.2f} |" for m in MODES]
    OUT.with_suffix(".md").write_text(
        f"# dfa: broadcast vs dense projection\n\n`python benchmarks/dfa_projection.py --model {args.model} "
        f"--epochs {args.epochs} --seeds {args.seeds}` (Fashion-MNIST, Adam 1e-3, batch 128; {result['seconds']} s)\n\n"
        "| project | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |\n|---|"
        + "---:|" * (len(seeds) + 1) + "\n" + "\n".join(rows)
        + "\n\nbroadcast − dense per seed: " + ", ".join(f"{d:+.2f}" for d in diff) + " points\n")
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
