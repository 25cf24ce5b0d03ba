"""The files of one run directory.

    config.yaml    the resolved config (what `--resume` reads back)
    meta.json      library version, git commit, torch version, start time, device
    metrics.jsonl  one JSON object per finished epoch
    diagnostics.jsonl  one JSON object per diagnostics measurement (angles, ranks)
    checkpoint.pt  the state after the last finished epoch (atomic)
    summary.json   written when the run finishes: {"status": "done", "final": {...}}
    tb/            TensorBoard event files
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
from pathlib import Path

import torch
import yaml

from .checkpoint import atomic_write_text

CONFIG, META, METRICS, DIAGNOSTICS, CHECKPOINT, SUMMARY, TB = (
    "config.yaml", "meta.json", "metrics.jsonl", "diagnostics.jsonl", "checkpoint.pt", "summary.json", "tb")


def git_commit() -> str | None:
    """The commit of the alignlab source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory: it has no {CONFIG}")
    return yaml.safe_load(path.read_text())


def _clean(value):
    """JSON has no NaN/inf: write them as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_line(metrics: dict) -> str:
    return json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n"


def rewrite_lines(path: Path, history: list[dict]) -> None:
    """A JSONL file made to hold exactly ``history`` (on start and on resume)."""
    atomic_write_text(path, "".join(metrics_line(m) for m in history))


def append_line(path: Path, metrics: dict) -> None:
    with open(path, "a") as f:
        f.write(metrics_line(metrics))


def write_summary(run_dir: Path, final: dict) -> None:
    text = json.dumps({"status": "done", "final": {k: _clean(v) for k, v in final.items()}}, indent=1)
    atomic_write_text(run_dir / SUMMARY, text + "\n")


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()
