"""What the four experiments share: run a list of arms, read their logs, write results.

An *arm* is one labelled run config. ``run_arms`` trains every arm into
``runs/experiments/<experiment>/<label>`` (a finished run is kept, an unfinished one resumed,
exactly as ``alignlab compare`` does), and each experiment script turns the runs' logs
(``metrics.jsonl``, ``diagnostics.jsonl``, ``summary.json``) into a Markdown table, a JSON file
and PNG plots under ``experiments/results/``. ``--quick`` shrinks every arm to 4 steps on 512
samples and writes its results elsewhere, so that the tests can run each script end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from alignlab.train import rundir
from alignlab.train.config import RunConfig, config_from_dict, load_config, to_dict
from alignlab.train.loop import TrainingDiverged, train

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT.parent / "configs"


@dataclass
class Arm:
    label: str  # the run's folder name and its row in the tables
    cfg: RunConfig


DIVERGED = "diverged.json"  # in a run whose loss became non-finite: {"error", "epochs_finished"}
DATASETS = ("fashion-mnist", "cifar10", "cifar100")  # --dataset; CIFAR: the papers' setting, not run here


@dataclass
class Plan:
    """What the command line asked for: a quick check, the seeds, the dataset."""

    quick: bool = False
    seeds: list[int] | None = None  # --seeds; None: the script's own (3 or more)
    dataset: str = "fashion-mnist"

    def pick_seeds(self, default) -> list[int]:
        """``--seeds`` or the script's ``default``; one seed with --quick."""
        seeds = list(self.seeds) if self.seeds else list(default)
        return seeds[:1] if self.quick else seeds

    def data(self) -> list[str]:
        """Overrides that select the dataset (CIFAR trains with the standard crop-and-flip)."""
        return [f"data.name={self.dataset}"] + (["data.augment=true"] if self.dataset.startswith("cifar") else [])


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="512 training samples, 1 epoch, 1 seed: check that the script runs end to end")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (default: the script's own, at least 3)")
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                        help="fashion-mnist (default) or the CIFAR version where the data exists")
    parser.add_argument("--runs", default="runs/experiments", help="where the runs go (default: %(default)s)")
    parser.add_argument("--results", default=None,
                        help="where results go (default: experiments/results; with --quick: <runs>/quick-results)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the results from the runs finished so far (they say how many)")
    args = parser.parse_args()
    if args.seeds is not None:
        try:
            args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    suffix = "" if args.dataset == "fashion-mnist" else f"-{args.dataset}"
    if args.results is None:
        args.results = str(Path(args.runs) / "quick-results") if args.quick else str(ROOT / ("results" + suffix))
    args.plan = Plan(args.quick, args.seeds, args.dataset)
    args.suffix = suffix
    return args


def run_folder(args: argparse.Namespace, name: str) -> Path:
    return Path(args.runs) / (name + args.suffix + ("-quick" if args.quick else ""))


def config(path: str, *overrides: str, quick: bool = False) -> RunConfig:
    """``configs/<path>`` with overrides; quick: 1 epoch (on 512 samples, see run_arms), probe of 64."""
    extra = ["progress=false"] + (["epochs=1", "diagnostics.probe_size=64"] if quick else [])
    return load_config(CONFIGS / path, [*overrides, *extra])


def run_arms(arms: list[Arm], out: Path, quick: bool = False) -> dict[str, Path]:
    """Train every arm (kept when finished, resumed when not); {label: run dir}."""
    dirs = {}
    for i, arm in enumerate(arms, 1):
        cfg = arm.cfg
        cfg.out_dir, cfg.name = str(out), arm.label
        run_dir = out / arm.label
        dirs[arm.label] = run_dir
        if (run_dir / rundir.CONFIG).exists():
            check_same_config(run_dir, cfg)
        bad = diverged(run_dir)
        if bad or rundir.is_done(run_dir):
            print(f"[{i}/{len(arms)}] {arm.label}: {'diverged' if bad else 'finished'} earlier, kept", file=sys.stderr)
            continue
        tic = time.perf_counter()
        try:
            if quick:
                _train_quick(cfg)
            else:
                train(resume=run_dir) if (run_dir / rundir.CONFIG).exists() else train(cfg)
        except TrainingDiverged as err:
            (run_dir / DIVERGED).write_text(json.dumps({"error": str(err), "epochs_finished": len(
                rundir.read_lines(run_dir / rundir.METRICS))}) + "\n")
            print(f"[{i}/{len(arms)}] {arm.label}: {err}", file=sys.stderr)
            continue
        print(f"[{i}/{len(arms)}] {arm.label}: {time.perf_counter() - tic:.0f} s, "
              f"final {final(run_dir)}", file=sys.stderr)
    return dirs


def finished_arms(arms: list[Arm], out: Path) -> dict[str, Path]:
    """{label: run dir} of the arms whose runs finished (of this config), training nothing."""
    dirs = {}
    for arm in arms:
        run_dir = out / arm.label
        arm.cfg.out_dir, arm.cfg.name = str(out), arm.label
        if rundir.is_done(run_dir) or diverged(run_dir):
            check_same_config(run_dir, arm.cfg)
            dirs[arm.label] = run_dir
    return dirs


def _diverged_at(run_dir: Path) -> str:
    """"in epoch N" for a diverged run, from its DIVERGED record."""
    try:
        return f"in epoch {json.loads((Path(run_dir) / DIVERGED).read_text())['epochs_finished'] + 1}"
    except (OSError, ValueError, KeyError, TypeError):
        return "epoch unknown"


def diverged(run_dir: Path) -> bool:
    """True when the run stopped on a non-finite loss (``run_arms`` wrote DIVERGED into it): an
    outcome, kept as it is (not trained again), named in the results, left out of their cells."""
    return (Path(run_dir) / DIVERGED).is_file()


def check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """A one-line ValueError when the run already in ``run_dir`` was trained by another config
    (an earlier design of the experiment): it is neither reused nor overwritten."""
    try:
        saved = to_dict(config_from_dict(rundir.read_config(run_dir)))  # a key added since: its default
    except ValueError as err:  # a key or option since removed
        raise ValueError(f"{run_dir} holds a run of a config this code cannot read ({err}); "
                         "move it away or give --runs another folder") from None
    saved = yaml.safe_load(yaml.safe_dump(saved, sort_keys=False))
    wanted = yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    differ = sorted(k for k in saved.keys() | wanted.keys()
                    if k not in ("out_dir", "name") and saved.get(k) != wanted.get(k))  # where it is: the same folder
    if differ:
        raise ValueError(f"{run_dir} holds a run of another config (differs in {', '.join(differ)}); "
                         "move it away or give --runs another folder")


def _train_quick(cfg: RunConfig) -> None:
    """One short epoch on the first 512 training samples (image datasets are subset here)."""
    from alignlab import data

    original = data.load

    def small(*args, **kwargs):
        ds = original(*args, **kwargs)
        ds.train_x, ds.train_y = ds.train_x[:512], ds.train_y[:512]
        ds.test_x, ds.test_y = ds.test_x[:256], ds.test_y[:256]
        return ds

    data.load = small
    try:
        train(cfg)
    finally:
        data.load = original


def final(run_dir: Path) -> dict:
    """The last epoch's metrics ({} when the run never finished an epoch)."""
    history = rundir.read_lines(run_dir / rundir.METRICS)
    return history[-1] if history else {}


def diagnostics(run_dir: Path) -> list[dict]:
    return rundir.read_lines(run_dir / rundir.DIAGNOSTICS)


def read_run(run_dir: Path, prefix: str) -> tuple[dict, list[dict]] | None:
    """({test_acc (last epoch), acc_curve (per epoch; None where no test pass ran), layers (of
    the ``prefix/<layer>`` diagnostics)}, the diagnostics) of a run; None while a log is empty."""
    history, diags = rundir.read_lines(run_dir / rundir.METRICS), diagnostics(run_dir)
    if not history or not diags:
        return None
    return {"test_acc": history[-1].get("test_acc"), "acc_curve": [m.get("test_acc") for m in history],
            "layers": layers(diags, prefix)}, diags


def layers(entries: list[dict], prefix: str) -> list[str]:
    """Layer names of the keys ``prefix/<layer>``, in network order."""
    if not entries:
        return []
    return [k[len(prefix) + 1:] for k in entries[0] if k.startswith(prefix + "/")]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    return (f"{time.strftime('%Y-%m-%d', time.gmtime())}; torch {torch.__version__}; "
            f"{platform.machine()}, {os.cpu_count()} CPUs")


def new_figure(panels: int, width: float = 4.0, height: float = 3.2, rows: int = 1):
    """A matplotlib Figure (Agg, no pyplot state) and its axes, ``rows`` × ceil(panels/rows)."""
    from matplotlib.figure import Figure

    cols = -(-panels // rows)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def wall_seconds(run_dir: Path) -> float | None:
    """From the run's start stamp (meta.json) to its summary.json; None if unfinished."""
    import datetime

    meta, summary = run_dir / rundir.META, run_dir / rundir.SUMMARY
    if not (meta.is_file() and summary.is_file()):
        return None
    started = datetime.datetime.fromisoformat(json.loads(meta.read_text())["started"]).timestamp()
    return summary.stat().st_mtime - started


def timing(dirs: dict[str, Path]) -> str:
    """One line: the training time of these runs, summed."""
    times = [t for t in (wall_seconds(d) for d in dirs.values()) if t is not None]
    return (f"Training time: {sum(times) / 60:.1f} min, summed over the {len(times)} finished runs "
            f"(start stamp to summary; a resumed run counts its pause too).")


def run_experiment(doc: str, name: str, folder: str, arms_of, summarise, markdown, figures, checks=None,
                   **meta) -> None:
    """The whole script: parse the options, train (or keep) ``arms_of(plan)`` into
    ``<runs>/<folder>``, summarise them and write ``name``'s table, JSON (with ``meta`` and
    ``checks(summary)``, the verdicts) and plots."""
    args = parse_args(doc)
    arms = arms_of(args.plan)
    try:
        if args.report_only:
            dirs = finished_arms(arms, run_folder(args, folder))
        else:
            dirs = run_arms(arms, run_folder(args, folder), args.quick)
    except ValueError as err:  # a config or a run folder that cannot be used: one line, nothing written
        sys.exit(f"{name}: {err}")
    if not dirs:
        sys.exit(f"{name}: no finished run under {run_folder(args, folder)}; nothing to report")
    bad = [k for k, d in dirs.items() if diverged(d)]
    done = {k: d for k, d in dirs.items() if k not in bad}
    s = summarise(done)
    payload = {"machine": machine(), "dataset": args.dataset, **meta, "results": s}
    if checks is not None:  # the verdicts, as JSON
        payload["verdicts"] = checks(s)
    payload["runs_finished"], payload["runs_planned"], payload["runs_diverged"] = len(dirs), len(arms), bad
    coverage = (f"Runs: all {len(arms)} planned runs finished." if len(dirs) == len(arms) else
                f"**Interim results: {len(dirs)} of the {len(arms)} planned runs finished** (`--report-only`); "
                "a cell or verdict that needs a missing run is left out.")
    if bad:
        coverage += (f" **{len(bad)} diverged** (the loss became non-finite; kept, not retrained): "
                     f"{', '.join(f'{k} ({_diverged_at(dirs[k])})' for k in bad)}; their seeds are left out of "
                     "the cells and verdicts above.")
    write_results(Path(args.results), name, markdown(s) + "\n\n" + coverage, payload, figures(s), done)


def write_results(results: Path, name: str, markdown: str, payload: dict, figures: dict,
                  dirs: dict[str, Path] | None = None) -> None:
    """``results/<name>.md``, ``<name>.json`` and ``<name>-<key>.png`` for each figure (key "": ``<name>.png``)."""
    results.mkdir(parents=True, exist_ok=True)
    if dirs is not None:
        markdown = markdown.rstrip() + "\n\n" + timing(dirs)
        payload = {**payload, "train_seconds": {k: wall_seconds(d) for k, d in dirs.items()}}
    (results / f"{name}.md").write_text(markdown.rstrip() + "\n")
    (results / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    for key, fig in figures.items():
        fig.savefig(results / (f"{name}-{key}.png" if key else f"{name}.png"), dpi=90)
    print(f"wrote {results / name}.md, .json and {len(figures)} plot(s)", file=sys.stderr)
