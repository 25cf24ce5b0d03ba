"""benchmarks/ldfa_tradeoff.py: --quick end to end on a small fake Fashion-MNIST (real IDX files,
tests/helpers.fake_fashion) into a tmp folder; a missing dataset is one line and exit status 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from helpers import fake_fashion

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ldfa_tradeoff.py"
ARMS = ["bp", "ldfa-r1", "ldfa-r2", "ldfa-r5", "ldfa-r10", "ldfa-rfull"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_quick_run_writes_every_arm(tmp_path):
    data_dir = fake_fashion(tmp_path / "fashion", n_train=300, n_test=200)
    out = tmp_path / "out"
    proc = run_script("--quick", "--data-dir", str(data_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr

    assert sorted(p.name for p in out.iterdir()) == [
        "ldfa_tradeoff-quick.json", "ldfa_tradeoff-quick.md", "ldfa_tradeoff-quick.png"]
    report = json.loads((out / "ldfa_tradeoff-quick.json").read_text())
    assert report["complete"] and report["settings"]["quick"]
    assert report["command"].startswith("python benchmarks/ldfa_tradeoff.py --quick")
    assert report["data"]["train_samples"] == 256 and report["data"]["test_samples"] == 200
    assert list(report["arms"]) == ARMS
    for label, arm in report["arms"].items():
        values = [arm["time_ratio"], *arm["time_ratio_iqr"], arm["mac_ratio"], arm["median_ms"], arm["macs"]]
        assert all(math.isfinite(v) and v > 0 for v in values), (label, values)
        assert len(arm["ratios"]) == report["settings"]["rounds"] == 2
        assert arm["seeds"] == [0] and len(arm["test_acc"]) == 1
        assert 0.0 <= arm["test_acc_mean"] <= 1.0 and arm["test_acc_std"] is None
    bp = report["arms"]["bp"]
    assert bp["rank"] is None and bp["time_ratio"] == 1.0 and bp["mac_ratio"] == 1.0
    assert report["arms"]["ldfa-r5"]["rank"] == 5 and report["arms"]["ldfa-rfull"]["rank"] == "full"
    # each layer uses min(r, its outputs): the 10-way head caps every rank at 10
    assert report["arms"]["ldfa-r5"]["layer_ranks"] == {"fc1": 5, "fc2": 5, "head": 5}
    assert report["arms"]["ldfa-rfull"]["layer_ranks"] == {"fc1": 64, "fc2": 64, "head": 10}

    text = (out / "ldfa_tradeoff-quick.md").read_text()
    assert "| arm | rank | time ratio to BP (IQR) | MAC ratio | test accuracy mean ± std | seeds |" in text
    assert all(f"| {label} |" in text for label in ARMS)
    assert "Command: `python benchmarks/ldfa_tradeoff.py --quick" in text and "torch " in text
    assert (out / "ldfa_tradeoff-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dataset_is_one_line_and_status_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script("--quick", "--data-dir", str(empty), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldfa_tradeoff.py: error: Fashion-MNIST"), proc.stderr
    assert not (tmp_path / "out").exists()
