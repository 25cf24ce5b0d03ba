"""Tests for the command line and `alignlab quickstart` (a small bp-vs-fa compare)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import alignlab
from alignlab.cli import main
from alignlab.data import write_idx
from alignlab.quickstart import run_quickstart
from alignlab.train import rundir
from helpers import fake_fashion


def _easy_fashion(directory: Path, n_train: int = 640, n_test: int = 200) -> None:
    """A tiny, easily learnable stand-in for Fashion-MNIST in the real file format."""
    fake_fashion(directory, n_train, n_test, noise=64)


def test_rules_lists_available_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    names = capsys.readouterr().out.split()
    assert names == alignlab.rules.available()
    assert {"bp", "fa"} <= set(names)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required: COMMAND"),
        (["tran"], "invalid choice: 'tran'"),
        (["quickstart", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["quickstart", "--epochs", "two"], "argument --epochs: expected a positive integer, got 'two'"),
        (["quickstart", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo"], "invalid choice: 'demo'"),  # renamed: `make demo` is the main job
    ],
)
def test_bad_arguments_exit_nonzero(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err.splitlines()[-1]


def test_missing_data_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "no-data-here"
    runs = tmp_path / "runs"
    assert main(["quickstart", "--data-dir", str(empty), "--out-dir", str(runs)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("alignlab: error: dataset 'fashion-mnist' not found")
    assert str(empty) in lines[0]
    assert "Traceback" not in captured.err
    assert not runs.exists()  # nothing trained, nothing left behind


def test_corrupt_data_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _easy_fashion(tmp_path, n_train=20, n_test=10)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-6])
    assert main(["quickstart", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignlab: error: ")
    assert "train-labels-idx1-ubyte.gz" in lines[0]
    assert not (tmp_path / "runs").exists()  # the same command runs once the data is fixed


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "alignlab", "quickstart", "--data-dir", str(tmp_path / "none"),
         "--out-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "alignlab: error: dataset 'fashion-mnist' not found" in result.stderr


def test_quickstart_compares_bp_and_fa_through_the_lab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _easy_fashion(tmp_path / "data", n_train=1280)  # 10 steps of 128 per epoch
    runs = tmp_path / "runs"
    argv = ["quickstart", "--data-dir", str(tmp_path / "data"), "--out-dir", str(runs), "diagnostics.probe_size=64"]
    assert main(argv) == 0
    root = runs / "quickstart-2ep"
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [f"report: {root / 'report.html'}", f"table:  {root / 'report.md'}"]
    for rule in ("bp", "fa"):
        run = rundir.read_run(root / f"mlp-{rule}-s0")  # a lab run directory like any other
        assert run.done and run.config["rule"] == rule and len(run.metrics) == 2
        assert run.metrics[-1]["test_acc"] > 0.8, (rule, run.metrics)  # chance is 0.1
        acc = 100 * run.metrics[-1]["test_acc"]
        assert f"{rule}: {acc:.2f}% test accuracy after 2 epoch(s)" in out
    assert "| fa " in (root / "report.md").read_text() and (root / "cka.json").is_file()


def test_quickstart_again_keeps_its_finished_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _easy_fashion(tmp_path / "data", n_train=128, n_test=64)
    kwargs = dict(epochs=1, data_dir=tmp_path / "data", out_dir=tmp_path / "runs", seed=3,
                  overrides=["diagnostics.enabled=false"])
    first = run_quickstart(**kwargs)
    metrics = (first / "mlp-fa-s3" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert run_quickstart(**kwargs) == first
    assert capsys.readouterr().err.count("finished earlier, kept") == 2
    assert (first / "mlp-fa-s3" / "metrics.jsonl").read_text() == metrics
