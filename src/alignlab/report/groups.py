"""Grouping runs by (dataset, model, rule) and summarising each group over its seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from .cka import ModelCka
from .runs import Run, epoch_of

TEST_ACC = "test_acc"
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
EPOCH_TIME = "epoch_time"
ANGLE = "angle"  # diagnostics.jsonl: degrees between the rule's weight update and BP's gradient
ERANK_DELTA = "erank/delta"  # diagnostics.jsonl: effective rank of the error signals
# diagnostics.jsonl: degrees between the feedback matrix and W, ∠(B, W) (pfa: B·R, the path
# alignment ∠(B·R, W)); every rule whose feedback is shaped like W has it (bp: 0), dfa none
WALIGN = "walign"


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of some values (std None with fewer than two)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Stat":
        present = [value for value in values if value is not None]
        if not present:
            return cls(None, None, 0)
        std = statistics.stdev(present) if len(present) > 1 else None
        return cls(statistics.fmean(present), std, len(present))


@dataclass
class Group:
    """The runs of one (dataset, model, rule).

    The statistics are taken over the finished runs; a group none of whose runs finished is
    summarised over its unfinished ones instead, and marked ``partial``.
    """

    dataset: str
    model: str
    rule: str
    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.done]

    @property
    def unfinished(self) -> list[Run]:
        return [run for run in self.runs if not run.done]

    @property
    def partial(self) -> bool:
        """True when no run of the group finished."""
        return not self.finished

    @property
    def counted(self) -> list[Run]:
        """The runs the statistics are taken over."""
        return self.finished or self.runs

    @property
    def test_acc(self) -> Stat:
        """Final test accuracy (a fraction) over the counted runs."""
        return Stat.of(run.final(TEST_ACC) for run in self.counted)

    @property
    def best_test_acc(self) -> float | None:
        """The highest test accuracy any counted run reached at any epoch."""
        best = [value for value in (run.best(TEST_ACC) for run in self.counted) if value is not None]
        return max(best) if best else None

    @property
    def epoch_time(self) -> Stat:
        """Each counted run's mean seconds per epoch, averaged over the runs."""
        return Stat.of(run.mean(EPOCH_TIME) for run in self.counted)

    @property
    def has_diagnostics(self) -> bool:
        """True when any run of the group has a diagnostics measurement."""
        return any(run.diagnostics for run in self.runs)

    def has_diagnostic(self, metric: str) -> bool:
        """True when any run of the group measured ``metric`` for some layer."""
        return any(run.diagnostic_measurements(metric) for run in self.runs)

    @property
    def is_bp(self) -> bool:
        """True when every run trained with plain backprop (its angles to BP are all 0)."""
        return all(run.rule == "bp" for run in self.runs)

    def final_diagnostic(self, metric: str) -> Stat:
        """Each counted run's ``metric`` at its last measurement, mean over layers, over the runs."""
        return Stat.of(run.final_diagnostic(metric) for run in self.counted)


@dataclass(frozen=True)
class Curve:
    """A metric against epoch over several runs: the mean and the min–max band per epoch."""

    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def curve(runs: Iterable[Run], key: str) -> Curve | None:
    """``key`` per epoch averaged over ``runs`` (each epoch over the runs that reached it)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, value in run.values(key):
            by_epoch.setdefault(epoch, []).append(value)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    return Curve(
        epochs=epochs,
        mean=[_finite_or_nan(statistics.fmean, by_epoch[epoch]) for epoch in epochs],
        low=[_finite_or_nan(min, by_epoch[epoch]) for epoch in epochs],
        high=[_finite_or_nan(max, by_epoch[epoch]) for epoch in epochs],
    )


@dataclass(frozen=True)
class StepCurve:
    """A diagnostic of one layer against training step, averaged over runs."""

    steps: list[int]
    mean: list[float]


def layer_order(runs: Iterable[Run], metric: str) -> list[str]:
    """The layers with a ``metric/L`` diagnostic in any run, in the order first seen."""
    return list(dict.fromkeys(layer for run in runs for layer in run.diagnostic_layers(metric)))


def layer_curves(runs: Iterable[Run], metric: str) -> dict[str, StepCurve]:
    """``metric`` per layer (in `layer_order`) against step, each step averaged over the runs
    that measured it (NaNs left out; NaN where all are)."""
    runs = list(runs)
    by_layer: dict[str, dict[int, list[float]]] = {layer: {} for layer in layer_order(runs, metric)}
    for run in runs:
        for step, values in run.diagnostic_measurements(metric).items():
            for layer, value in values.items():
                by_layer[layer].setdefault(step, []).append(value)
    curves = {}
    for layer, by_step in by_layer.items():
        steps = sorted(by_step)
        curves[layer] = StepCurve(steps, [_finite_or_nan(statistics.fmean, by_step[s]) for s in steps])
    return curves


def rule_order(runs: Iterable[Run]) -> list[str]:
    """Rule labels in the order first seen, with plain ``bp`` first when present."""
    order = list(dict.fromkeys(run.rule_label for run in runs))
    if "bp" in order:
        order.remove("bp")
        order.insert(0, "bp")
    return order


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by (dataset, model, rule label).

    Datasets and models keep the order first seen; within each, rules follow `rule_order`.
    """
    groups: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        key = (run.dataset, run.model, run.rule_label)
        groups.setdefault(key, Group(*key, runs=[])).runs.append(run)
    datasets = list(dict.fromkeys(run.dataset for run in runs))
    models = list(dict.fromkeys(run.model for run in runs))
    rules = rule_order(runs)
    return sorted(
        groups.values(),
        key=lambda g: (datasets.index(g.dataset), models.index(g.model), rules.index(g.rule)),
    )


@dataclass
class Section:
    """The groups that share a dataset and a model: one block of plots in the report."""

    dataset: str
    model: str
    groups: list[Group]
    cka: ModelCka | None = None  # from the compare folder's cka.json, for this model

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.model}"


def sections(groups: list[Group], cka: Mapping[str, ModelCka] | None = None) -> list[Section]:
    """The groups split by (dataset, model), keeping the groups' order.

    Each section gets ``cka[model]`` when there is one (cka.json names no dataset, so every
    section of that model shares it).
    """
    parts: dict[tuple[str, str], Section] = {}
    for group in groups:
        key = (group.dataset, group.model)
        parts.setdefault(key, Section(*key, groups=[])).groups.append(group)
    for part in parts.values():
        part.cka = (cka or {}).get(part.model)
    return list(parts.values())


def epochs_reached(run: Run) -> int:
    """The last epoch number in the run's metrics (0 when it has none)."""
    return max((epoch_of(line, index) for index, line in enumerate(run.metrics)), default=0)


def _finite_or_nan(reduce: Callable[[list[float]], float], values: list[float]) -> float:
    """``reduce`` over the non-NaN values; NaN when there are none (a diverged epoch)."""
    finite = [value for value in values if not math.isnan(value)]
    return reduce(finite) if finite else math.nan
