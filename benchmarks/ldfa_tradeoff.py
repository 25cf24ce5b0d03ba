"""ldfa's compute–accuracy trade-off on Fashion-MNIST: rank r against BP, in step time, MACs and
test accuracy.

    python benchmarks/ldfa_tradeoff.py                 # about 10-12 min on 2 CPU cores
    python benchmarks/ldfa_tradeoff.py --quick         # tiny settings, < 30 s (for tests)
    python benchmarks/ldfa_tradeoff.py [--ranks 1,2,5,10,full] [--seeds 0,1,2] [--epochs 2]
        [--train-size 50000] [--rounds 20] [--lr 0.01] [--out DIR] [--data-dir DIR] [--timing-only]

Arms: ``bp`` (the unconverted model: plain PyTorch backprop) and ``ldfa-r<r>`` for each rank
(``alignlab.rules.get("ldfa", rank=r)``; each layer uses min(r, its outputs), so the head's rank
is at most 10; ``full`` = every layer's outputs). Network: the speed benchmark's wide MLP
784-1024-1024-10 (``models.build("mlp", depth=2, width=1024)``), batch 128.

Three measurements, each separate from the others:

* **Step time relative to BP** (as ``benchmarks/speed.py`` measures it): one model per arm, all
  deep copies of one seeded MLP, each with its own optimizer; one training step is zero_grad,
  forward, cross-entropy, backward and the optimizer step, on a small pool of fixed random
  batches (the same for every arm; no data loading). After a warm-up, every round times every
  arm once (a visit of 1 to 20 steps, as many as fill about 0.15 s), the order rotated by one
  each round; figure of merit: the median over rounds of (arm's time per step / BP's in the same
  round), with the interquartile range of those per-round ratios.
* **MACs per training step relative to BP**: one more step of each timing model under
  ``torch.utils.flop_counter.FlopCounterMode`` (``benchmarks/speed.py``'s ``count_macs``: its
  FLOPs / 2; matmuls counted, element-wise work not): the arithmetic limit of the time ratio.
* **Test accuracy**: for each seed, every arm trains from the same initial weights (seeded) on
  the same fixed training subset (drawn once, independent of the seed) in the same batch order
  (``alignlab.data.batches``, seeded by (seed, epoch)) for E epochs, with the optimizer of the
  lab's rule comparisons (``experiments/feedback_dimension.py``):
  SGD, momentum 0.9, lr 0.01, cosine to 0 over all steps (stepped per batch), L2 weight decay
  1e-3 on matrices (``alignlab.optim.build_optimizer``: ldfa's Q, and P, are matrices, so they are
  in W's parameter group and get W's decay, which is what makes Q track P·W); then accuracy on
  the whole 10 000-image test set. Mean ± standard deviation (n − 1) over seeds.

Writes ``ldfa_tradeoff.{json,md,png}`` (``ldfa_tradeoff-quick.*`` with ``--quick``,
``ldfa_tradeoff-timing.{json,md}`` with ``--timing-only``) into
``benchmarks/results/`` or ``--out``; the JSON and Markdown are rewritten after each training
run, so a run cut short keeps what it finished. Without the Fashion-MNIST files (the Debian
package's /usr/share/datasets/fashion-mnist, $ALIGNLAB_DATA, the user cache, or ``--data-dir``)
it exits with status 2 and one line; it never downloads.
"""

from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

from alignlab import converted_layers, data, models, rules
from alignlab.files import atomic_write_bytes, atomic_write_text
from alignlab.optim import build_optimizer, build_schedule

sys.path.insert(0, str(HERE))
from speed import count_macs, machine  # noqa: E402  (benchmarks/speed.py, read only)

NAME = "ldfa_tradeoff"
REFERENCE = "bp"  # plain PyTorch backprop: the unconverted model
DEFAULT_RANKS = "1,2,5,10,full"


@dataclass
class Settings:
    ranks: list = field(default_factory=lambda: [1, 2, 5, 10, "full"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 2
    train_size: int = 50_000  # a fixed random subset of the 60 000 training images
    test_size: int | None = None  # None: the whole test set
    batch: int = 128
    width: int = 1024
    depth: int = 2
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    schedule: str = "cosine"
    rounds: int = 20  # timed rounds
    warmup: int = 3  # warm-up steps per arm before timing
    visit_s: float = 0.15  # each visit lasts about this long (1 to 20 steps)
    timing_batches: int = 4  # the pool of fixed random batches the timing cycles through
    eval_batch: int = 1000
    threads: int | None = None  # torch threads (None: torch's default, one per core)
    quick: bool = False
    timing_only: bool = False
    data_dir: str | None = None

    @classmethod
    def quick_settings(cls, **kw) -> "Settings":
        base = dict(seeds=[0], epochs=1, train_size=256, test_size=1000, width=64, rounds=2, warmup=1,
                    timing_batches=2, threads=1, quick=True)
        base.update(kw)
        return cls(**base)


def arm_labels(settings: Settings) -> list[str]:
    return [REFERENCE] + [f"ldfa-r{r}" for r in settings.ranks]


def arm_rank(label: str):
    if label == REFERENCE:
        return None
    r = label.removeprefix("ldfa-r")
    return r if r == "full" else int(r)


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (as the alignlab CLI and speed.py)."""
    print(f"ldfa_tradeoff.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


# ----------------------------------------------------------------------------- models


def base_model(settings: Settings, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", in_shape=(1, 28, 28), num_classes=10, depth=settings.depth, width=settings.width)


def make_arm(settings: Settings, label: str, base: nn.Module, seed: int, total_steps: int = 1):
    """A deep copy of ``base`` converted for ``label`` (feedback drawn from ``seed``), its
    optimizer (built after convert, so ldfa's P and Q are in it) and lr schedule."""
    model = copy.deepcopy(base)
    rank = arm_rank(label)
    if rank is not None:
        torch.manual_seed(seed + 1_000)  # the feedback draws: the same in every phase for a seed
        alignlab.convert(model, rules.get("ldfa", rank=rank))
    model.train()
    opt = build_optimizer(model, settings.optimizer, settings.lr, settings.weight_decay, settings.momentum)
    sched = build_schedule(opt, settings.schedule, total_steps)
    return model, opt, sched


def layer_ranks(model: nn.Module) -> dict[str, int]:
    return {name: int(fb.P.shape[0]) for name, _, fb in converted_layers(model)}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


# ----------------------------------------------------------------------------- timing and MACs


def time_and_count(settings: Settings, log=print) -> dict:
    """Interleaved step times of every arm on fixed random batches, then MACs per step."""
    labels = arm_labels(settings)
    base = base_model(settings, 0)
    g = torch.Generator().manual_seed(1)
    pool = [(torch.randn(settings.batch, 1, 28, 28, generator=g), torch.randint(0, 10, (settings.batch,), generator=g))
            for _ in range(max(1, settings.timing_batches))]
    arms = {}
    for label in labels:
        model, opt, _ = make_arm(settings, label, base, 0)
        arms[label] = {"model": model, "opt": opt, "next": 0}

    def steps_of(label: str, n: int) -> torch.Tensor:
        a = arms[label]
        for _ in range(n):
            x, y = pool[a["next"] % len(pool)]
            a["next"] += 1
            loss = train_step(a["model"], a["opt"], x, y)
        return loss

    steps = {}
    for label in labels:  # warm-up; the fastest warm-up step sets the steps per visit
        fastest = math.inf
        for _ in range(max(1, settings.warmup)):
            tic = time.perf_counter()
            steps_of(label, 1)
            fastest = min(fastest, time.perf_counter() - tic)
        steps[label] = 1 if settings.quick else max(1, min(20, round(settings.visit_s / fastest)))

    times = {label: [] for label in labels}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(settings.rounds):
            k = r % len(labels)
            for label in labels[k:] + labels[:k]:
                tic = time.perf_counter()
                loss = steps_of(label, steps[label])
                times[label].append((time.perf_counter() - tic) / steps[label] * 1e3)
                if not math.isfinite(float(loss.detach())):
                    log(f"  timing: {label}'s loss is {float(loss)} (timing goes on)")
            gc.collect()
            if not settings.quick and (r + 1) % 5 == 0:
                log(f"  timing: round {r + 1}/{settings.rounds}, bp {statistics.median(times[REFERENCE]):.1f} ms/step")
    finally:
        if gc_was_enabled:
            gc.enable()

    x, y = pool[0]
    macs = {label: count_macs(lambda a=arms[label]: train_step(a["model"], a["opt"], x, y)) for label in labels}

    ref, ref_macs = times[REFERENCE], macs[REFERENCE]["macs"]
    out = {}
    for label in labels:
        ratios = [a / b for a, b in zip(times[label], ref)]
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) >= 2 else [ratios[0]] * 3
        out[label] = {
            "median_ms": statistics.median(times[label]),
            "time_ratio": statistics.median(ratios),
            "time_ratio_iqr": [q[0], q[2]],
            "ratios": ratios,
            "ms_per_round": times[label],
            "steps_per_visit": steps[label],
            "macs": macs[label]["macs"],
            "macs_by_op": macs[label]["macs_by_op"],
            "mac_ratio": macs[label]["macs"] / ref_macs,
            "layer_ranks": layer_ranks(arms[label]["model"]),
        }
    return out


# ----------------------------------------------------------------------------- training


def load_data(settings: Settings):
    try:
        return data.load("fashion-mnist", data_dir=settings.data_dir, download=False)
    except (data.DatasetError, OSError, ValueError) as err:
        fail(f"Fashion-MNIST not found or not readable ({err})")


def training_subset(ds, settings: Settings):
    """The first ``train_size`` images of one fixed permutation (seed-independent), and the
    first ``test_size`` test images (all by default)."""
    n = len(ds.train_y)
    if settings.train_size < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(12345))[: settings.train_size]
        idx = idx.sort().values
        train_x, train_y = ds.train_x[idx], ds.train_y[idx]
    else:
        train_x, train_y = ds.train_x, ds.train_y
    m = len(ds.test_y) if settings.test_size is None else min(settings.test_size, len(ds.test_y))
    return train_x, train_y, ds.test_x[:m], ds.test_y[:m]


@torch.no_grad()
def accuracy(model: nn.Module, x, y, ds, settings: Settings) -> float:
    model.eval()
    correct = 0
    for xb, yb in data.batches(x, y, batch_size=settings.eval_batch, mean=ds.mean, std=ds.std):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train()
    return correct / len(y)


def train_one(settings: Settings, label: str, seed: int, split, ds) -> dict:
    train_x, train_y, test_x, test_y = split
    steps_per_epoch = math.ceil(len(train_y) / settings.batch)
    model, opt, sched = make_arm(settings, label, base_model(settings, seed), seed,
                                 total_steps=steps_per_epoch * settings.epochs)
    tic = time.perf_counter()
    last, losses = math.nan, []
    for epoch in range(1, settings.epochs + 1):
        total, seen = 0.0, 0
        for x, y in data.batches(train_x, train_y, batch_size=settings.batch, mean=ds.mean, std=ds.std,
                                 shuffle=True, seed=seed, epoch=epoch):
            loss = train_step(model, opt, x, y)
            sched.step()
            last = float(loss.detach())
            total, seen = total + last * len(y), seen + len(y)
        losses.append(total / max(seen, 1))
    train_s = time.perf_counter() - tic
    acc = accuracy(model, test_x, test_y, ds, settings)
    return {"seed": seed, "test_acc": acc, "train_loss_per_epoch": losses, "final_batch_loss": last,
            "train_s": train_s, "eval_s": time.perf_counter() - tic - train_s,
            "steps": steps_per_epoch * settings.epochs}


def summarise_accuracy(runs: list[dict]) -> dict:
    accs = [r["test_acc"] for r in runs]
    return {"seeds": [r["seed"] for r in runs], "test_acc": accs,
            "test_acc_mean": statistics.fmean(accs) if accs else None,
            "test_acc_std": statistics.stdev(accs) if len(accs) >= 2 else None}


# ----------------------------------------------------------------------------- report


def command_line(argv: list[str]) -> str:
    return "python benchmarks/ldfa_tradeoff.py" + (" " + shlex.join(argv) if argv else "")


def run(settings: Settings, argv: list[str], out_dir: Path, log=print) -> dict:
    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    ds = None if settings.timing_only else load_data(settings)  # fail before any work
    split = None if ds is None else training_subset(ds, settings)
    report = {
        "what": "ldfa's compute-accuracy trade-off: rank r vs BP on Fashion-MNIST, the speed benchmark's MLP",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "torch": torch.__version__, "alignlab": getattr(alignlab, "__version__", "?"),
        "command": command_line(argv), "machine": machine(), "settings": asdict(settings),
        "network": f"mlp 784-{'-'.join([str(settings.width)] * settings.depth)}-10, ReLU, PyTorch init",
        "optimizer": (f"alignlab.optim.build_optimizer: {settings.optimizer}(lr={settings.lr}, momentum="
                      f"{settings.momentum}), L2 weight decay {settings.weight_decay} on matrices (W, ldfa's P and "
                      f"Q), none on biases; {settings.schedule} schedule to 0 over all steps (training only)"),
        "time_measure": "median over interleaved rounds of (arm's time per step / bp's in the same round); "
                        "fixed random batches; step = zero_grad, forward, cross-entropy, backward, optimizer step",
        "macs_measure": "one training step under torch.utils.flop_counter.FlopCounterMode, FLOPs / 2 "
                        "(benchmarks/speed.py's count_macs): matmuls counted, element-wise work not",
        "arms": {label: {"rank": arm_rank(label)} for label in arm_labels(settings)},
        "complete": False,
    }
    if split is not None:
        report["data"] = {"train_samples": len(split[1]), "test_samples": len(split[3]),
                          "steps_per_run": math.ceil(len(split[1]) / settings.batch) * settings.epochs}

    tic = time.perf_counter()
    log(f"timing {', '.join(arm_labels(settings))}: {settings.rounds} interleaved rounds")
    timing = time_and_count(settings, log)
    report["timing_s"] = time.perf_counter() - tic
    for label, t in timing.items():
        report["arms"][label].update(t)
        log(f"  {label}: {t['median_ms']:.1f} ms/step, time ratio {t['time_ratio']:.3f} "
            f"(IQR {t['time_ratio_iqr'][0]:.2f}-{t['time_ratio_iqr'][1]:.2f}), MAC ratio {t['mac_ratio']:.3f}")

    if split is not None:
        steps = report["data"]["steps_per_run"]
        guess = sum(timing[lab]["median_ms"] for lab in timing) * 1e-3 * steps * len(settings.seeds)
        report["training_estimate_s"] = guess
        log(f"training: {len(timing)} arms x {len(settings.seeds)} seed(s), {settings.epochs} epoch(s) of "
            f"{len(split[1])} images ({steps} steps per run); about {guess / 60:.1f} min at the timed step times")
        runs = {label: [] for label in timing}
        tic = time.perf_counter()
        for seed in settings.seeds:
            for label in timing:
                res = train_one(settings, label, seed, split, ds)
                runs[label].append(res)
                report["arms"][label]["runs"] = runs[label]
                report["arms"][label].update(summarise_accuracy(runs[label]))
                log(f"  seed {seed} {label}: test accuracy {res['test_acc']:.4f} ({res['train_s']:.0f} s)")
                report["training_s"] = time.perf_counter() - tic
                report["elapsed_s"] = time.perf_counter() - started
                write_outputs(report, out_dir, plot=False)  # a run cut short keeps what it finished
    report["complete"] = True
    report["elapsed_s"] = time.perf_counter() - started
    report["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _acc(a: dict) -> str:
    if a.get("test_acc_mean") is None:
        return "–"
    std = a.get("test_acc_std")
    return f"{100 * a['test_acc_mean']:.2f} %" + (f" ± {100 * std:.2f}" if std is not None else "")


def _macs(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def training_text(report: dict) -> str:
    s, d = report["settings"], report.get("data", {})
    if s["timing_only"]:
        return "Training: not run (--timing-only)."
    n = d.get("train_samples", s["train_size"])
    subset = "all 60 000 training images" if n >= 60_000 else f"a fixed random subset of {n} of the 60 000 training images"
    text = (f"Training: {s['epochs']} epoch(s) on {subset} ({d.get('steps_per_run', '?')} steps per run), seeds "
            f"{', '.join(map(str, s['seeds']))} (each seed: the same initial weights and batch order for every arm); "
            f"test accuracy on {d.get('test_samples', '?')} test images, mean ± std (n − 1) over seeds. Optimizer: "
            f"{report['optimizer']}. ")
    if not s["quick"]:
        text += ("The defaults (2 epochs on 50 000 images, 3 seeds, 20 timing rounds) were chosen so that the whole "
                 "command takes about 10–12 min on 2 otherwise idle CPU cores, estimated from the step times of "
                 "2026-11-30 (bp 23 ms, ldfa r ≤ 10 23–26 ms, ldfa full 125 ms)")
        if report.get("training_estimate_s") is not None:
            text += f"; this run's estimate from its own timed step times: {report['training_estimate_s'] / 60:.1f} min of training"
        text += ". "
    return text + "A few epochs rank the arms; they are not converged accuracies."


def to_markdown(report: dict) -> str:
    s, mach = report["settings"], report["machine"]
    quick = " (--quick: tiny settings, the numbers mean nothing)" if s["quick"] else ""
    status = "" if report["complete"] else " **Incomplete: the run stopped before every arm and seed finished.**"
    lines = [
        f"# ldfa's compute–accuracy trade-off on Fashion-MNIST{quick}",
        "",
        f"{report['date']}; torch {report['torch']}; {mach['cpu']}, {mach['cpu_count']} CPUs, "
        f"{mach['torch_threads']} torch threads; {mach['platform']}. Load average at start "
        f"{[round(v, 2) for v in mach.get('loadavg_at_start') or []]}, at end "
        f"{[round(v, 2) for v in mach.get('loadavg_at_end') or []]}; whole run "
        f"{report.get('elapsed_s', 0) / 60:.1f} min (timing {report.get('timing_s', 0):.0f} s, training "
        f"{report.get('training_s', 0):.0f} s).{status}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Network: {report['network']}; batch {s['batch']}. Arms: bp (plain PyTorch backprop) and ldfa at rank "
        f"r ∈ {{{', '.join(map(str, s['ranks']))}}} (each layer min(r, its outputs): the head's rank is at most 10).",
        "",
        training_text(report),
        "",
        f"Time ratio: {report['time_measure']}; {s['rounds']} rounds, IQR = 25th–75th percentile of the per-round "
        f"ratios. MAC ratio: {report['macs_measure']}; it is the time ratio's arithmetic limit.",
        "",
        "| arm | rank | time ratio to BP (IQR) | MAC ratio | test accuracy mean ± std | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for label, a in report["arms"].items():
        rank = "–" if a["rank"] is None else str(a["rank"])
        if "time_ratio" in a:
            lo, hi = a["time_ratio_iqr"]
            ratio = "1" if label == REFERENCE else f"{a['time_ratio']:.3f} ({lo:.2f}–{hi:.2f})"
            mac = "1" if label == REFERENCE else f"{a['mac_ratio']:.3f}"
        else:
            ratio = mac = "–"
        seeds = ", ".join(map(str, a.get("seeds", []))) or "–"
        lines.append(f"| {label} | {rank} | {ratio} | {mac} | {_acc(a)} | {seeds} |")
    lines += ["", "Per arm: ms per step (timing, median) and MACs per step (bp: "
              f"{_macs(report['arms'][REFERENCE]['macs']) if 'macs' in report['arms'][REFERENCE] else '–'}).", "",
              "| arm | ms/step | MACs/step | per-layer ranks | per-seed test accuracy |", "|---|---|---|---|---|"]
    for label, a in report["arms"].items():
        ranks = ", ".join(f"{k} {v}" for k, v in a.get("layer_ranks", {}).items()) or "–"
        per_seed = ", ".join(f"{100 * v:.2f}" for v in a.get("test_acc", [])) or "–"
        ms = f"{a['median_ms']:.1f}" if "median_ms" in a else "–"
        macs = _macs(a["macs"]) if "macs" in a else "–"
        lines.append(f"| {label} | {ms} | {macs} | {ranks} | {per_seed} |")
    if report.get("plot"):
        lines += ["", f"![accuracy vs time and MAC ratio]({report['plot']})"]
    return "\n".join(lines) + "\n"


def plot_png(report: dict) -> bytes | None:
    """Test accuracy against time ratio and against MAC ratio, one point per arm, BP marked."""
    arms = {k: a for k, a in report["arms"].items() if a.get("test_acc_mean") is not None and "time_ratio" in a}
    if not arms:
        return None
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, xlabel in ((axes[0], "time_ratio", "step time / BP's (median, IQR)"),
                            (axes[1], "mac_ratio", "MACs per step / BP's")):
        for label, a in arms.items():
            acc = 100 * a["test_acc_mean"]
            err = 100 * (a["test_acc_std"] or 0.0)
            x = a[key]
            xerr = None
            if key == "time_ratio" and label != REFERENCE:
                lo, hi = a["time_ratio_iqr"]
                xerr = [[max(0.0, x - lo)], [max(0.0, hi - x)]]
            if label == REFERENCE:
                ax.errorbar([x], [acc], yerr=[err], fmt="*", ms=14, color="black", capsize=3, label="BP")
                ax.axhline(acc, color="black", lw=0.6, ls=":")
            else:
                ax.errorbar([x], [acc], xerr=xerr, yerr=[err], fmt="o", color="tab:blue", capsize=3)
            ax.annotate(label.replace("ldfa-r", "r="), (x, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axvline(1.0, color="gray", lw=0.6, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    s = report["settings"]
    fig.suptitle(f"ldfa rank r vs BP, Fashion-MNIST, MLP 784-{s['width']}-{s['width']}-10, {s['epochs']} epoch(s), "
                 f"{len(s['seeds'])} seed(s)" + (" (--quick)" if s["quick"] else ""), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_outputs(report: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = NAME + ("-quick" if report["settings"]["quick"] else "") + ("-timing" if report["settings"]["timing_only"] else "")
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    if plot:
        png = plot_png(report)
        if png is not None:
            atomic_write_bytes(out_dir / f"{stem}.png", png)
            report["plot"] = f"{stem}.png"
            paths.append(out_dir / f"{stem}.png")
    atomic_write_text(paths[0], json.dumps(report, indent=1) + "\n")
    atomic_write_text(paths[1], to_markdown(report))
    return paths


# ----------------------------------------------------------------------------- command line


def parse_ranks(text: str) -> list:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "full":
            out.append("full")
            continue
        try:
            r = int(part)
        except ValueError:
            fail(f"--ranks: {part!r} is neither a positive integer nor 'full'")
        if r < 1:
            fail(f"--ranks: {r} is not a positive integer")
        out.append(r)
    if not out:
        fail("--ranks is empty")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for tests: MLP 784-64-64-10, 1 torch thread, 1 seed, 1 epoch on 256 images, "
                        "1000 test images, 2 timing rounds (writes ldfa_tradeoff-quick.*)")
    p.add_argument("--ranks", default=None, help=f"comma-separated ldfa ranks (default {DEFAULT_RANKS})")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2; --quick 0)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 2; --quick 1)")
    p.add_argument("--train-size", type=int, default=None,
                   help="training images, a fixed random subset (default 50000; --quick 256)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default all 10000; --quick 1000)")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.01)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20; --quick 2)")
    p.add_argument("--timing-only", action="store_true",
                   help="time and count MACs, no training (writes ldfa_tradeoff[-quick]-timing.*)")
    p.add_argument("--data-dir", default=None, help="look for the Fashion-MNIST IDX files only here")
    p.add_argument("--out", default=str(RESULTS), help="output folder (default benchmarks/results)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    kw = {}
    if args.ranks is not None:
        kw["ranks"] = parse_ranks(args.ranks)
    if args.seeds is not None:
        try:
            kw["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            fail(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
        if not kw["seeds"]:
            fail("--seeds is empty")
    for name in ("epochs", "train_size", "test_size", "rounds"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                fail(f"--{name.replace('_', '-')} must be at least 1")
            kw[name] = value
    if args.lr is not None:
        kw["lr"] = args.lr
    kw.update(timing_only=args.timing_only, data_dir=args.data_dir)
    return Settings.quick_settings(**kw) if args.quick else Settings(**kw)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    settings = settings_from(args)
    out_dir = Path(args.out)
    report = run(settings, argv, out_dir, log=lambda *a: print(*a, file=sys.stderr, flush=True))
    paths = write_outputs(report, out_dir)
    print(f"wrote {', '.join(map(str, paths))} ({report['elapsed_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
