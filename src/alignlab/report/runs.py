"""One run as the report sees it: names, per-epoch values and diagnostics by layer.

The run directory itself (file names, how they are read, which files a run needs) belongs to
`alignlab.train.rundir`; `load_run` reads through `rundir.read_run` and adds the accessors
the report's grouping, tables and plots use. Runs without ``diagnostics.jsonl`` (older runs,
and runs with diagnostics off) have an empty `Run.diagnostics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train import rundir

UNKNOWN = "?"


@dataclass
class Run(rundir.RunFiles):
    """One training run as read from its directory (`rundir.RunFiles`), with the report's accessors."""

    @property
    def name(self) -> str:
        """The config's ``name``, else the directory's name."""
        name = self.config.get("name")
        return str(name) if name not in (None, "") else self.path.name

    @property
    def dataset(self) -> str:
        return _section_name(self.config, "data")

    @property
    def model(self) -> str:
        return _section_name(self.config, "model")

    @property
    def rule(self) -> str:
        rule = self.config.get("rule")
        return str(rule) if rule not in (None, "") else UNKNOWN

    @property
    def rule_label(self) -> str:
        """The rule, followed by its options and per-layer rules when any are set: ``fa``,
        ``fa (match_norm=True)`` or ``fa (features.*: kp)``."""
        options = self.config.get("rule_options") or {}
        layers = self.config.get("layer_rules") or {}
        listed = [f"{key}={options[key]}" for key in sorted(options, key=str)] if isinstance(options, dict) else []
        if isinstance(layers, dict):
            listed += [f"{pattern}: {value}" for pattern, value in layers.items()]
        return f"{self.rule} ({', '.join(listed)})" if listed else self.rule

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def values(self, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` for every epoch whose ``key`` is a number (None and non-numbers skipped)."""
        points = []
        for index, line in enumerate(self.metrics):
            value = line.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            points.append((epoch_of(line, index), float(value)))
        return points

    def final(self, key: str) -> float | None:
        """The last numeric value of ``key`` over the epochs, or None."""
        points = self.values(key)
        return points[-1][1] if points else None

    def best(self, key: str) -> float | None:
        """The largest non-NaN value of ``key`` over the epochs, or None."""
        finite = [value for _, value in self.values(key) if not math.isnan(value)]
        return max(finite) if finite else None

    def mean(self, key: str) -> float | None:
        """The mean of ``key`` over the epochs, or None."""
        values = [value for _, value in self.values(key)]
        return sum(values) / len(values) if values else None

    # --- diagnostics.jsonl ----------------------------------------------------------------

    def diagnostic_layers(self, metric: str) -> list[str]:
        """The layers ``L`` with a ``metric/L`` key, in the order the keys first appear."""
        return list(dict.fromkeys(
            layer for line in self.diagnostics for layer, _ in _layer_values(line, metric)))

    def diagnostic_measurements(self, metric: str) -> dict[int, dict[str, float]]:
        """``{step: {layer: value}}`` of ``metric``, by increasing step.

        Only lines with an integer ``step`` and at least one numeric ``metric/L`` count; when
        a step was measured twice (a resumed run), the later line wins.
        """
        by_step: dict[int, dict[str, float]] = {}
        for line in self.diagnostics:
            step = line.get("step")
            if isinstance(step, bool) or not isinstance(step, int):
                continue
            values = dict(_layer_values(line, metric))
            if values:
                by_step[step] = values
        return dict(sorted(by_step.items()))

    def final_diagnostic(self, metric: str) -> float | None:
        """The mean over layers of ``metric`` at the last measurement (NaNs left out), or None."""
        measurements = self.diagnostic_measurements(metric)
        if not measurements:
            return None
        last = measurements[max(measurements)]
        finite = [value for value in last.values() if math.isfinite(value)]
        return sum(finite) / len(finite) if finite else None


def epoch_of(line: dict[str, Any], index: int) -> int:
    """The line's ``epoch``, or its 1-based position when that is missing or not an integer."""
    epoch = line.get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return epoch
    return index + 1


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory with `rundir.read_run`; a ValueError names the path when it is not one.

    A run without a summary whose status is ``done`` is unfinished; malformed lines of its
    JSONL files are skipped with a warning.
    """
    return Run(**vars(rundir.read_run(run_dir)))


def _section_name(config: dict[str, Any], key: str) -> str:
    """``config[key]["name"]``, or ``config[key]`` when that is a plain string."""
    section = config.get(key)
    if isinstance(section, dict):
        section = section.get("name")
    return str(section) if section not in (None, "") else UNKNOWN


def _layer_values(line: dict[str, Any], metric: str) -> list[tuple[str, float]]:
    """``(layer, value)`` for every ``metric/layer`` key of ``line`` whose value is a number."""
    prefix = metric + "/"
    out = []
    for key, value in line.items():
        if not (isinstance(key, str) and key.startswith(prefix) and len(key) > len(prefix)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out.append((key[len(prefix):], float(value)))
    return out
