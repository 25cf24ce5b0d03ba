"""One training run: config → data + model → convert(rule) → epochs → logs and checkpoints.

The loop never asks which rule it runs. Everything that decides a result is seeded: the
weights and feedback tensors (``torch.manual_seed(seed)`` before building), the batch order
and augmentation (a generator seeded by (seed, epoch)), dropout (torch's RNG state, saved in
every checkpoint). So a run resumed from its last checkpoint, after a crash or ``kill -9``,
ends with the same metrics as one that was never stopped (tested bit for bit on CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data, models
from ..convert import convert
from ..optim import build_optimizer, build_schedule
from . import rundir
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, config_from_dict, to_dict
from .diagnose import Diagnose
from .progress import Progress
from .tblog import TBLog


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Setup:
    """What a run trains: built from its config alone."""

    dataset: data.Dataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int


def build(cfg: RunConfig) -> Setup:
    """Dataset, converted model, optimizer and schedule for ``cfg``, all seeded by cfg.seed."""
    dataset = data.load(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download, **cfg.data.options)
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.model.name, in_shape=dataset.input_shape, num_classes=dataset.num_classes,
                         norm=cfg.model.norm, **cfg.model.options)
    convert(model, cfg.rule, exclude=cfg.exclude, **cfg.rule_options)
    o = cfg.optim
    optimizer = build_optimizer(model, o.name, o.lr, o.weight_decay, o.momentum)
    steps = math.ceil(len(dataset.train_y) / cfg.batch_size)
    schedule = build_schedule(optimizer, o.schedule, steps * cfg.epochs)
    return Setup(dataset, model, optimizer, schedule, steps)


def loss_and_correct(task: str, out: torch.Tensor, y: torch.Tensor):
    if task == "classification":
        return nn.functional.cross_entropy(out, y), (out.argmax(1) == y).sum()
    return nn.functional.mse_loss(out, y), None


def train_epoch(cfg: RunConfig, s: Setup, epoch: int, progress: Progress, on_step) -> dict:
    """One pass over the training set; mean loss and accuracy over its samples.

    ``on_step(step)`` runs after every optimizer step (diagnostics).
    """
    s.model.train()
    ds = s.dataset
    total_loss, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
    step = (epoch - 1) * s.steps_per_epoch
    for x, y in data.batches(ds.train_x, ds.train_y, batch_size=cfg.batch_size, mean=ds.mean, std=ds.std,
                             shuffle=True, seed=cfg.seed, epoch=epoch, augment=cfg.data.augment):
        loss, hits = loss_and_correct(ds.task, s.model(x), y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at epoch {epoch}; stopped (the last good checkpoint is kept); "
                "try a smaller optim.lr")
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        s.optimizer.step()
        s.schedule.step()
        step += 1
        total_loss += loss.detach() * len(y)
        correct += 0 if hits is None else hits
        seen += len(y)
        progress.step(loss=loss.item(), acc=None if hits is None else hits.item() / len(y))
        on_step(step)
    acc = correct.item() / seen if ds.task == "classification" else None
    return {"train_loss": total_loss.item() / seen, "train_acc": acc}


@torch.no_grad()
def evaluate(cfg: RunConfig, s: Setup) -> dict:
    """Mean loss and accuracy on the test set."""
    s.model.eval()
    ds = s.dataset
    total_loss, correct = 0.0, 0
    for x, y in data.batches(ds.test_x, ds.test_y, batch_size=cfg.eval_batch_size, mean=ds.mean, std=ds.std):
        loss, hits = loss_and_correct(ds.task, s.model(x), y)
        total_loss += loss.item() * len(y)
        correct += 0 if hits is None else hits.item()
    n = len(ds.test_y)
    return {"test_loss": total_loss / n, "test_acc": correct / n if ds.task == "classification" else None}


def _state(s: Setup, epoch: int, history: list[dict], diagnostics: list[dict]) -> dict:
    return {
        "epoch": epoch,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "schedule": s.schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "history": history,
        "diagnostics": diagnostics,
    }


def _restore(s: Setup, state: dict) -> tuple[int, list[dict], list[dict]]:
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    return state["epoch"], state["history"], state["diagnostics"]


def start(cfg: RunConfig) -> Path:
    """Create the run directory of a new run (an existing one is never overwritten)."""
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {str(run_dir)!r} already exists; resume it with --resume "
                         "or pick another name= / out_dir=")
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_start(run_dir, to_dict(cfg), device="cpu")
    return run_dir


def train(cfg: RunConfig | None = None, resume: str | Path | None = None) -> Path:
    """Run ``cfg`` in a new run directory, or continue the run in ``resume``; return its dir."""
    if resume is not None:
        run_dir = Path(resume)
        cfg = config_from_dict(rundir.read_config(run_dir))
        state = load_checkpoint(run_dir / rundir.CHECKPOINT) if (run_dir / rundir.CHECKPOINT).exists() else None
    else:
        run_dir, state = start(cfg), None
    s = build(cfg)
    done, history, diags = _restore(s, state) if state else (0, [], [])
    rundir.rewrite_lines(run_dir / rundir.METRICS, history)
    rundir.rewrite_lines(run_dir / rundir.DIAGNOSTICS, diags)
    diagnose = Diagnose(cfg, s.dataset, lambda out, y: loss_and_correct(s.dataset.task, out, y)[0])
    purge = done * s.steps_per_epoch + 1 if state else None
    with Progress(cfg, s.steps_per_epoch, done) as progress, TBLog(run_dir, purge) as tb:

        def record(step: int, epoch: int) -> None:
            values = diagnose(s.model, step, epoch)
            diags.append(values)
            rundir.append_line(run_dir / rundir.DIAGNOSTICS, values)
            tb.log(values)

        if done == 0 and diagnose.enabled:
            record(0, 0)
        for epoch in range(done + 1, cfg.epochs + 1):
            progress.epoch(epoch)
            tic = time.perf_counter()
            metrics = {"epoch": epoch, "step": epoch * s.steps_per_epoch}

            def on_step(step: int, epoch=epoch) -> None:
                if diagnose.due_at_step(step):
                    record(step, epoch)

            metrics.update(train_epoch(cfg, s, epoch, progress, on_step))
            metrics["epoch_time"] = time.perf_counter() - tic
            if diagnose.due_at_epoch_end:
                record(metrics["step"], epoch)
            metrics.update(evaluate(cfg, s))
            metrics["lr"] = s.optimizer.param_groups[0]["lr"]
            history.append(metrics)
            save_checkpoint(run_dir / rundir.CHECKPOINT, _state(s, epoch, history, diags))
            rundir.append_line(run_dir / rundir.METRICS, metrics)
            progress.log(metrics)
            tb.log(metrics)
    rundir.write_summary(run_dir, history[-1] if history else {})
    return run_dir
