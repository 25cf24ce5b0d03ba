"""experiments/*.py: each script runs end to end in --quick mode (4 steps per arm) and writes
its table, JSON and plots; the tables hold a row for every arm and the claim checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import fake_fashion

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    fake_fashion(directory, n_train=640, n_test=256, noise=64)
    return directory


def run_script(name: str, data_dir: Path, tmp_path: Path) -> Path:
    env = {**os.environ, "ALIGNLAB_DATA": str(data_dir), "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / f"{name}.py"), "--quick", "--runs", str(tmp_path / "runs"),
                           "--results", str(results)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


@pytest.mark.parametrize("name, rows, plots", [
    ("rank_collapse", ["| bp |", "| fa+muon |", "| fa+norm |", "| fa+muon+norm |"], ["rank_collapse-mlp6.png", "rank_collapse-lenet.png"]),
    ("pfa_vs_rest", ["| bp |", "| usf |", "| kp |", "| pfa |"], ["pfa_vs_rest-mlp.png", "pfa_vs_rest-lenet.png"]),
    ("representations", ["| fa |", "| frsf |", "| pfa |"], ["representations-mlp.png", "representations-lenet.png"]),
    ("feedback_dimension", ["| 1 |", "| 20 |", "| full |"], ["feedback_dimension.png"]),
])
def test_experiment_runs_and_writes_results(name, rows, plots, data_dir, tmp_path):
    results = run_script(name, data_dir, tmp_path)
    md = (results / f"{name}.md").read_text()
    for row in rows:
        assert row in md, row
    assert "checked" in md and ("**yes**" in md or "**no**" in md) and "Training time:" in md
    assert all(t is not None and t > 0 for t in payload_times(results, name))
    payload = json.loads((results / f"{name}.json").read_text())
    assert payload["machine"] and payload["results"]
    for plot in plots:
        assert (results / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def payload_times(results: Path, name: str) -> list:
    return list(json.loads((results / f"{name}.json").read_text())["train_seconds"].values())
