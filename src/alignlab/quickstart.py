"""``alignlab quickstart``: backprop versus feedback alignment on Fashion-MNIST in about a minute.

A small config run by the lab's own compare path, nothing beside it: the same MLP (the lab's
``mlp``, 784-256-256-10), from the same initial weights and seeing the same batches, trained
once with rule ``bp`` and once with rule ``fa``, then the usual report. It is

    alignlab compare --rules bp,fa --name quickstart-<N>ep epochs=<N> <SETTINGS> [key=value ...]

Runs and report go to ``<out_dir>/quickstart-<N>ep`` (``runs/`` by default); as with any
comparison, running it again keeps the finished runs. (``make demo`` is the main job: six
rules on the MLP and LeNet-5.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .data.locate import PathLike
from .train import rundir
from .train.compare import compare, plan
from .train.config import RunConfig, load_config

RULES = ["bp", "fa"]
SETTINGS = ["data.name=fashion-mnist", "data.download=false", "model.name=mlp", "optim.name=adam",
            "optim.lr=0.001", "batch_size=128"]


def quickstart_config(epochs: int = 2, data_dir: PathLike | None = None, out_dir: PathLike | None = None,
                      seed: int = 0, overrides: Sequence[str] = ()) -> RunConfig:
    """`SETTINGS`, then epochs and seed, then ``key=value`` overrides; data and output folders when given."""
    cfg = load_config(None, [*SETTINGS, f"epochs={epochs}", f"seed={seed}", *overrides])
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)  # set directly: a path is not parsed as YAML
    if out_dir is not None:
        cfg.out_dir = str(out_dir)
    return cfg


def run_quickstart(epochs: int = 2, data_dir: PathLike | None = None, out_dir: PathLike | None = None,
                   seed: int = 0, overrides: Sequence[str] = ()) -> Path:
    """Compare bp and fa on the quickstart config; print each rule's test accuracy; return the folder.

    Raises :class:`alignlab.data.DatasetError` when Fashion-MNIST cannot be found (it is not
    downloaded here unless ``data.download=true`` is among the overrides).
    """
    cfg = quickstart_config(epochs, data_dir, out_dir, seed, overrides)
    name = f"quickstart-{cfg.epochs}ep"
    root = compare(cfg, RULES, [cfg.seed], name=name)
    for run_cfg in plan(cfg, RULES, [cfg.seed], None, name):
        print(summary_line(Path(run_cfg.out_dir) / run_cfg.name, run_cfg.rule))
    return root


def summary_line(run_dir: Path, rule: str) -> str:
    """``rule: acc% test accuracy after N epoch(s)``, read back from the run directory."""
    run = rundir.read_run(run_dir)
    acc = run.metrics[-1].get("test_acc") if run.metrics else None
    shown = "n/a" if acc is None else f"{100 * acc:.2f}%"
    return f"{rule}: {shown} test accuracy after {len(run.metrics)} epoch(s)"
