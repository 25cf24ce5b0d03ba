"""The run directory: its file names, how a run writes them and how anything reads them back.

This module is the one owner of the format; the training loop writes through it, and
``alignlab.report`` and ``compare`` read through it.

    config.yaml        the resolved config (what ``--resume`` reads back)
    meta.json          library version, git commit, torch version, start time, device
    metrics.jsonl      one JSON object per finished epoch
    diagnostics.jsonl  one JSON object per diagnostics measurement on a fixed probe batch:
                       ``{"step": ..., "epoch": ..., "angle/L": ..., "erank/delta/L": ...}``
                       with one key per diagnostic and converted layer ``L`` (see
                       `alignlab.diagnostics.probe`); the first is at step 0, before training.
                       Older runs, and runs with diagnostics off, have none.
    checkpoint.pt      the state after the last finished epoch (atomic, `.checkpoint`)
    summary.json       written when the run finishes: {"status": "done", "final": {...}}
    tb/                TensorBoard event files

A run without a summary whose status is ``done`` is unfinished. JSON has no NaN: non-finite
numbers are written as null. Whole files are written atomically (`alignlab.files`).
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..files import atomic_write_text

CONFIG, META, METRICS, DIAGNOSTICS, CHECKPOINT, SUMMARY, TB = (
    "config.yaml", "meta.json", "metrics.jsonl", "diagnostics.jsonl", "checkpoint.pt", "summary.json", "tb")


# --- writing ---------------------------------------------------------------------------------


def git_commit() -> str | None:
    """The commit of the alignlab source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_free(run_dir: Path) -> None:
    """A ValueError when ``run_dir`` holds any file: a new run never overwrites an earlier one."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {str(run_dir)!r} already exists; resume it with --resume "
                         "or pick another name= / out_dir=")


def create(run_dir: Path, config: dict, device: str, world: int = 1) -> None:
    """Make the directory of a new run (after `check_free`) and write its config.yaml and meta.json."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_start(run_dir, config, device, world)


def discard_untrained(run_dir: Path, existed: bool) -> None:
    """Undo `create` for a run that stopped on an error before its first checkpoint.

    Such a run trained nothing worth keeping, and its directory would block the same command
    (a new run never overwrites a directory with files). It held only this run's files
    (`check_free` passed before `create`), so no earlier run loses anything. A directory that
    ``existed`` (empty) before is left empty; one with a checkpoint is left alone.
    """
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    if existed:
        run_dir.mkdir(parents=True, exist_ok=True)


def write_start(run_dir: Path, config: dict, device: str, world: int = 1) -> None:
    """Write config.yaml and meta.json of a new run."""
    from .. import __version__

    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
    meta = {
        "alignlab_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "processes": world,
    }
    atomic_write_text(run_dir / META, json.dumps(meta, indent=1) + "\n")


def _clean(value):
    """JSON has no NaN/inf: write them as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_line(metrics: dict) -> str:
    """One JSON-lines line of ``metrics`` (non-finite numbers as null)."""
    return json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n"


def rewrite_lines(path: Path, history: list[dict]) -> None:
    """A JSONL file made to hold exactly ``history`` (on start and on resume)."""
    atomic_write_text(path, "".join(metrics_line(m) for m in history))


def append_line(path: Path, metrics: dict) -> None:
    """Append one line to a JSONL file (metrics.jsonl, diagnostics.jsonl)."""
    with open(path, "a") as f:
        f.write(metrics_line(metrics))


def write_summary(run_dir: Path, final: dict) -> None:
    """Mark the run finished: summary.json with its final metrics."""
    text = json.dumps({"status": "done", "final": {k: _clean(v) for k, v in final.items()}}, indent=1)
    atomic_write_text(run_dir / SUMMARY, text + "\n")


# --- reading ---------------------------------------------------------------------------------


@dataclass
class RunFiles:
    """What a run directory holds, as `read_run` reads it back."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run directory; a one-line ValueError names the path when it is not one.

    ``config.yaml`` and ``metrics.jsonl`` are required; ``meta.json``, ``summary.json`` and
    ``diagnostics.jsonl`` are optional. Lines of the JSONL files that are not JSON objects,
    such as a half-written last line after a crash, are skipped with a warning.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"not a run directory: {path} (no such directory)")
    missing = [name for name in (CONFIG, METRICS) if not (path / name).is_file()]
    if missing:
        raise ValueError(f"not a run directory: {path} (missing {' and '.join(missing)})")
    return RunFiles(path=path, config=read_config(path), meta=read_json(path / META),
                    metrics=read_lines(path / METRICS), done=is_done(path),
                    diagnostics=read_lines(path / DIAGNOSTICS))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping; a one-line ValueError when it is missing or unreadable."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"not a run directory: {Path(run_dir)} (missing {CONFIG})")
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


def is_done(run_dir: str | Path) -> bool:
    """True when the run finished: its summary.json says ``"status": "done"``."""
    return read_json(Path(run_dir) / SUMMARY).get("status") == "done"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (``[]`` when it is missing); bad lines warned about."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                warnings.warn(f"{path}:{number}: skipping a line that is not a JSON object", stacklevel=2)
                continue
            records.append(record)
    return records


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is missing, with a warning when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        warnings.warn(f"{path}: ignoring a file that is not a JSON object", stacklevel=2)
        return {}
    return data
