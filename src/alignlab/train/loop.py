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
from ..optim import build_optimizer, build_schedule, decay_multiplier, set_decay
from . import rundir
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, config_from_dict, to_dict
from .diagnose import Diagnose
from .progress import Progress
from .placement import Placement, finish, place, stuck_collectives_named
from .tblog import TBLog


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Setup:
    """What a run trains: built from its config alone."""

    dataset: data.Dataset
    net: nn.Module  # the converted model itself (state dicts, diagnostics)
    model: nn.Module  # what the loop calls: net, or net wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    place: Placement
    steps_per_epoch: int


def build(cfg: RunConfig, place: Placement | None = None) -> Setup:
    """Dataset, converted model, optimizer and schedule for ``cfg``, all seeded by cfg.seed."""
    place = place or Placement(torch.device("cpu"), "fp32")
    dataset = data.load(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download, **cfg.data.options)
    if cfg.data.train_subset:
        dataset = dataset.first(cfg.data.train_subset)
    torch.manual_seed(cfg.seed)
    net = models.build(cfg.model.name, in_shape=dataset.input_shape, num_classes=dataset.num_classes,
                       norm=cfg.model.norm, **cfg.model.options)
    convert(net, cfg.rule_spec(), exclude=cfg.exclude)
    net.to(place.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    model = net
    if place.world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[place.device] if place.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    o = cfg.optim
    optimizer = build_optimizer(net, o.name, o.lr, o.weight_decay, o.momentum)
    steps = math.ceil(len(dataset.train_y) / cfg.batch_size)
    schedule = build_schedule(optimizer, o.schedule, steps * cfg.epochs)
    return Setup(dataset, net, model, optimizer, schedule, place.scaler(), place, steps)


def layout(cfg: RunConfig, x: torch.Tensor) -> torch.Tensor:
    """An image batch in the run's memory order (``cfg.channels_last``: NHWC); others as they are."""
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last and x.dim() == 4 else x


def loss_and_correct(task: str, out: torch.Tensor, y: torch.Tensor):
    if task == "classification":
        return nn.functional.cross_entropy(out.float(), y), (out.argmax(1) == y).sum()
    return nn.functional.mse_loss(out.float(), y), None


def _check_finite(loss: torch.Tensor, p: Placement, epoch: int) -> None:
    bad = p.all_sum(float(not torch.isfinite(loss)))[0]
    if bad:
        raise TrainingDiverged(
            f"loss is {loss.item()} at epoch {epoch}; stopped (the last good checkpoint is kept); "
            "try a smaller optim.lr")


def train_epoch(cfg: RunConfig, s: Setup, epoch: int, progress: Progress, on_step) -> dict:
    """One pass over the training set; mean loss and accuracy over its samples.

    Each process takes its shard of every global batch; its loss is weighted by its share,
    so the all-reduced gradient is the gradient of the global batch's mean loss, exactly.
    ``on_step(step)`` runs after every optimizer step (diagnostics).
    """
    s.model.train()
    ds, p = s.dataset, s.place
    total_loss, correct, seen = 0.0, 0, 0
    step = (epoch - 1) * s.steps_per_epoch
    for x, y in data.batches(ds.train_x, ds.train_y, batch_size=cfg.batch_size, mean=ds.mean, std=ds.std,
                             shuffle=True, seed=cfg.seed, epoch=epoch, augment=cfg.data.augment):
        n_global = len(y)
        x, y = p.shard(x, y)
        x = layout(cfg, x)
        with p.autocast():
            loss, hits = loss_and_correct(ds.task, s.model(x), y)
        _check_finite(loss, p, epoch)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss * (len(y) * p.world / n_global)).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.schedule.step()
        step += 1
        batch_loss = loss.item()
        total_loss += batch_loss * len(y)
        correct += 0 if hits is None else hits.item()
        seen += len(y)
        progress.step(loss=batch_loss, acc=None if hits is None else hits.item() / max(len(y), 1))
        on_step(step)
    total_loss, correct, seen = p.all_sum(total_loss, correct, seen)
    acc = correct / seen if ds.task == "classification" else None
    return {"train_loss": total_loss / seen, "train_acc": acc}


@torch.no_grad()
def evaluate(cfg: RunConfig, s: Setup) -> dict:
    """Mean loss and accuracy on the test set (sharded over processes)."""
    s.model.eval()
    ds, p = s.dataset, s.place
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in data.batches(ds.test_x, ds.test_y, batch_size=cfg.eval_batch_size, mean=ds.mean, std=ds.std):
        x, y = p.shard(x, y)
        if len(y) == 0:
            continue
        x = layout(cfg, x)
        with p.autocast():
            loss, hits = loss_and_correct(ds.task, s.net(x), y)
        total_loss += loss.item() * len(y)
        correct += 0 if hits is None else hits.item()
        seen += len(y)
    total_loss, correct, seen = p.all_sum(total_loss, correct, seen)
    return {"test_loss": total_loss / seen, "test_acc": correct / seen if ds.task == "classification" else None}


def _state(s: Setup, epoch: int, history: list[dict], diagnostics: list[dict]) -> dict:
    return {
        "epoch": epoch,
        "model": s.net.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "schedule": s.schedule.state_dict(),
        "scaler": s.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "history": history,
        "diagnostics": diagnostics,
    }


def _restore(s: Setup, state: dict) -> tuple[int, list[dict], list[dict]]:
    s.net.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.schedule.load_state_dict(state["schedule"])
    s.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return state["epoch"], state["history"], state["diagnostics"]


def train(cfg: RunConfig | None = None, resume: str | Path | None = None) -> Path:
    """Run ``cfg`` in a new run directory, or continue the run in ``resume``; return its dir."""
    if resume is not None:
        cfg = config_from_dict(rundir.read_config(resume))
    p = place(cfg.device, cfg.precision, cfg.ddp_timeout)
    try:
        with stuck_collectives_named(p):
            run_dir = _new(cfg, p) if resume is None else _resume(cfg, p, Path(resume))
            p.barrier()  # every rank is done before any tears its connections down (gloo aborts a
            return run_dir  # peer whose socket closes under it)
    finally:
        finish(p)


def _resume(cfg: RunConfig, p: Placement, run_dir: Path) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint (from the start when it has none)."""
    ckpt = run_dir / rundir.CHECKPOINT
    state = load_checkpoint(ckpt) if ckpt.exists() else None
    return _run(cfg, p, build(cfg, p), run_dir, state)


def _new(cfg: RunConfig, p: Placement) -> Path:
    """A new run, in a directory that is free (an existing run directory is never overwritten).

    Data and model are built before the directory is made, and an error before the first
    checkpoint removes it again (`rundir.discard_untrained`): a run that trained nothing leaves
    nothing that would block the same command. A diverged run keeps its directory (compare
    reports it), and so does an interrupted one (``--resume`` continues it).
    """
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    rundir.check_free(run_dir)
    p.barrier()  # every process has looked before rank 0 writes
    s = build(cfg, p)
    existed = run_dir.exists()
    if p.is_main:
        rundir.create(run_dir, to_dict(cfg), device=str(p.device), world=p.world)
    try:
        return _run(cfg, p, s, run_dir, None)
    except TrainingDiverged:
        raise
    except Exception:
        if p.is_main:
            rundir.discard_untrained(run_dir, existed)
        raise


def _run(cfg: RunConfig, p: Placement, s: Setup, run_dir: Path, state: dict | None) -> Path:
    """Train ``s`` from ``state`` (None: from the start) to cfg.epochs, writing the run's files."""
    done, history, diags = _restore(s, state) if state else (0, [], [])
    main = p.is_main
    if main:
        rundir.rewrite_lines(run_dir / rundir.METRICS, history)
        rundir.rewrite_lines(run_dir / rundir.DIAGNOSTICS, diags)
    diagnose = Diagnose(cfg, s.dataset, lambda out, y: loss_and_correct(s.dataset.task, out, y)[0], p.device,
                        enabled=main)
    purge = done * s.steps_per_epoch + 1 if state else None
    with Progress(cfg, s.steps_per_epoch, done, enabled=main) as progress, TBLog(run_dir, purge, enabled=main) as tb:

        def record(step: int, epoch: int) -> None:
            values = diagnose(s.net, step, epoch)
            diags.append(values)
            rundir.append_line(run_dir / rundir.DIAGNOSTICS, values)
            tb.log(values)

        if done == 0 and diagnose.enabled:
            record(0, 0)
        for epoch in range(done + 1, cfg.epochs + 1):
            progress.epoch(epoch)
            if cfg.optim.decay_schedule:
                set_decay(s.optimizer, decay_multiplier(cfg.optim.decay_schedule, epoch))
            tic = time.perf_counter()
            metrics = {"epoch": epoch, "step": epoch * s.steps_per_epoch}

            def on_step(step: int, epoch=epoch) -> None:
                if diagnose.due_at_step(step):
                    record(step, epoch)

            metrics.update(train_epoch(cfg, s, epoch, progress, on_step))
            metrics["epoch_time"] = time.perf_counter() - tic
            if diagnose.due_at_epoch_end:
                record(metrics["step"], epoch)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                metrics.update(evaluate(cfg, s))
            metrics["lr"] = s.optimizer.param_groups[0]["lr"]
            history.append(metrics)
            if main:
                save_checkpoint(run_dir / rundir.CHECKPOINT, _state(s, epoch, history, diags))
                rundir.append_line(run_dir / rundir.METRICS, metrics)
            progress.log(metrics)
            tb.log(metrics)
    if main:
        rundir.write_summary(run_dir, history[-1] if history else {})
    return run_dir
