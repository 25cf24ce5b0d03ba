"""Reading one run directory: its config, metadata, per-epoch metrics and final status.

A run directory, as the training loop writes it, holds ``config.yaml`` (the resolved run
config), ``meta.json`` (versions, commit, start time, device), ``metrics.jsonl`` (one JSON
object per finished epoch) and, once the run has finished, ``summary.json`` with
``{"status": "done", ...}``. A run without a finished summary is reported as unfinished.

With diagnostics on, it also holds ``diagnostics.jsonl``: one JSON object per measurement on a
fixed probe batch, ``{"step": ..., "epoch": ..., "angle/L": ..., "erank/delta/L": ..., ...}``
with one key per diagnostic and converted layer ``L`` (see `alignlab.diagnostics.probe`). The
first measurement is at step 0, before training. Older runs, and runs with diagnostics off,
have no such file; their `Run.diagnostics` is empty.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DIAGNOSTICS_FILE = "diagnostics.jsonl"

UNKNOWN = "?"


@dataclass
class Run:
    """One training run as read from its directory."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

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
        """The rule, followed by its options when any are set: ``fa`` or ``fa (match_norm=True)``."""
        options = self.config.get("rule_options") or {}
        if not isinstance(options, dict) or not options:
            return self.rule
        listed = ", ".join(f"{key}={options[key]}" for key in sorted(options, key=str))
        return f"{self.rule} ({listed})"

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
    """Read a run directory; a ValueError names the path when it is not one.

    ``config.yaml`` and ``metrics.jsonl`` are required; ``meta.json``, ``summary.json`` and
    ``diagnostics.jsonl`` are optional (a run without a summary whose status is ``done`` is
    unfinished). Lines of ``metrics.jsonl`` and ``diagnostics.jsonl`` that are not JSON
    objects, such as a half-written last line after a crash, are skipped with a warning.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"not a run directory: {path} (no such directory)")
    missing = [name for name in (CONFIG_FILE, METRICS_FILE) if not (path / name).is_file()]
    if missing:
        raise ValueError(f"not a run directory: {path} (missing {' and '.join(missing)})")
    diagnostics = path / DIAGNOSTICS_FILE
    return Run(
        path=path,
        config=read_config(path / CONFIG_FILE),
        meta=_read_optional_json(path / META_FILE),
        metrics=read_metrics(path / METRICS_FILE),
        done=_read_optional_json(path / SUMMARY_FILE).get("status") == "done",
        diagnostics=read_metrics(diagnostics) if diagnostics.is_file() else [],
    )


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; a ValueError names the file when it is not one."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"unreadable run config: {path} ({reason})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"unreadable run config: {path} (not a mapping)")
    return config


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON objects in a JSON-lines file; blank lines skipped, malformed ones warned about."""
    metrics = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                warnings.warn(f"{path}:{number}: skipping a line that is not a JSON object", stacklevel=3)
                continue
            metrics.append(record)
    return metrics


def _read_optional_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is missing, with a warning when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        warnings.warn(f"{path}: ignoring a file that is not a JSON object", stacklevel=3)
        return {}
    return data


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
