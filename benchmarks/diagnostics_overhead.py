"""What the default diagnostics schedule costs, on Fashion-MNIST.

The default schedule measures once per epoch (plus once at step 0) on a probe batch of 256
training samples. In one process, interleaved (train steps, diagnostics, train steps, ...),
this times the training step of a real run and one diagnostics measurement, and reports

    overhead = time of one measurement / time of one epoch (steps per epoch × median step)

    python benchmarks/diagnostics_overhead.py [--rounds 5] [--models mlp,lenet] [--rules fa,dfa]

Writes benchmarks/results/diagnostics_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from alignlab.train import load_config
from alignlab.train.diagnose import Diagnose
from alignlab.train.loop import build, loss_and_correct
from alignlab import data

OUT = Path(__file__).parent / "results" / "diagnostics_overhead.json"


def measure(model: str, rule: str, rounds: int, steps: int) -> dict:
    cfg = load_config(None, [f"model.name={model}", f"rule={rule}", "progress=false", "device=cpu"])
    s = build(cfg)
    ds = s.dataset
    loss_fn = lambda out, y: loss_and_correct(ds.task, out, y)[0]  # noqa: E731
    diagnose = Diagnose(cfg, ds, loss_fn)
    batches = iter(data.batches(ds.train_x, ds.train_y, batch_size=cfg.batch_size, mean=ds.mean, std=ds.std,
                                shuffle=True, seed=0, epoch=1))
    step_times, diag_times = [], []
    for r in range(rounds + 1):  # round 0 warms up
        tic = time.perf_counter()
        for _ in range(steps):
            x, y = next(batches)
            loss = loss_fn(s.model(x), y)
            s.optimizer.zero_grad()
            loss.backward()
            s.optimizer.step()
        per_step = (time.perf_counter() - tic) / steps
        tic = time.perf_counter()
        diagnose(s.net, 0, 0)
        if r:
            step_times.append(per_step)
            diag_times.append(time.perf_counter() - tic)
    epoch = statistics.median(step_times) * s.steps_per_epoch
    diag = statistics.median(diag_times)
    return {"median_step_s": statistics.median(step_times), "steps_per_epoch": s.steps_per_epoch,
            "epoch_s": epoch, "measurement_s": diag, "overhead_per_epoch": diag / epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per round")
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--rules", default="fa,dfa")
    args = parser.parse_args()
    results = {}
    for model in args.models.split(","):
        for rule in args.rules.split(","):
            r = measure(model, rule, args.rounds, args.steps)
            results[f"{model}/{rule}"] = r
            print(f"{model}/{rule}: step {1e3 * r['median_step_s']:.1f} ms, epoch ≈ {r['epoch_s']:.1f} s, "
                  f"one measurement {r['measurement_s']:.3f} s, overhead {100 * r['overhead_per_epoch']:.2f} %",
                  flush=True)
    report = {"what": "one default diagnostics measurement / one training epoch (Fashion-MNIST, batch 128)",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "results": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
