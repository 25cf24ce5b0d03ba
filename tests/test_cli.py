"""Tests for the command line and the Fashion-MNIST demo."""

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
from alignlab.demo import run_demo


def _banded_images(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """28x28 noise images with a bright band at rows 2k..2k+1 for class k."""
    images = torch.randint(0, 64, (len(labels), 28, 28), generator=generator, dtype=torch.uint8)
    rows = torch.arange(28)
    band = (rows[None, :] // 2) == labels[:, None]  # [N, 28]
    images[band] = 255
    return images


def _easy_fashion(directory: Path, n_train: int = 640, n_test: int = 200) -> None:
    """A tiny, easily learnable stand-in for Fashion-MNIST in the real file format."""
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=gen)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", _banded_images(labels, gen))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels.to(torch.uint8))


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
        (["demo", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["demo", "--epochs", "two"], "argument --epochs: expected a positive integer, got 'two'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
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
    assert main(["demo", "--data-dir", str(empty)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("alignlab: error: dataset 'fashion-mnist' not found")
    assert str(empty) in lines[0]
    assert "Traceback" not in captured.err


def test_corrupt_data_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _easy_fashion(tmp_path, n_train=20, n_test=10)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-6])
    assert main(["demo", "--data-dir", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignlab: error: ")
    assert "train-labels-idx1-ubyte.gz" in lines[0]


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "alignlab", "demo", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "alignlab: error: dataset 'fashion-mnist' not found" in result.stderr


def test_demo_trains_both_rules_on_small_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _easy_fashion(tmp_path)
    results = run_demo(epochs=2, batch_size=64, data_dir=tmp_path)
    out = capsys.readouterr().out
    assert set(results) == {"bp", "fa"}
    for rule in ("bp", "fa"):
        assert f"[{rule}] epoch 1/2  train loss" in out
        assert f"[{rule}] epoch 2/2  train loss" in out
        assert results[rule] > 0.8, (rule, results)  # chance is 0.1
    last_two = out.strip().splitlines()[-2:]
    assert last_two[0].startswith("bp (backprop):")
    assert last_two[1].startswith("fa (feedback alignment):")


def test_demo_is_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _easy_fashion(tmp_path, n_train=128, n_test=64)
    first = run_demo(epochs=1, batch_size=32, data_dir=tmp_path, seed=3)
    second = run_demo(epochs=1, batch_size=32, data_dir=tmp_path, seed=3)
    assert first == second
