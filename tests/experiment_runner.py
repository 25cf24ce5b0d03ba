"""Shared by the tests of experiments/*.py: a small Fashion-MNIST in its real files and a
--quick run of one script on it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import fake_fashion

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SRC = Path(__file__).resolve().parents[1] / "src"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    fake_fashion(directory, n_train=640, n_test=256, noise=64)
    return directory


def experiment(name: str):
    """``experiments/<name>.py`` imported as a module (its siblings ``common`` and ``stats`` with it)."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


def run_script(name: str, data_dir: Path, tmp_path: Path, *extra: str, fails: str | None = None) -> Path:
    """``experiments/<name>.py --quick`` with its runs and results under ``tmp_path``; the results dir.
    ``fails``: it must exit non-zero, its last line of stderr containing this text."""
    env = {**os.environ, "ALIGNLAB_DATA": str(data_dir),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / f"{name}.py"), "--quick", "--runs", str(tmp_path / "runs"),
                           "--results", str(results), *extra], env=env, capture_output=True, text=True, timeout=600)
    if fails is not None:
        assert proc.returncode != 0 and fails in proc.stderr.strip().splitlines()[-1], proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def payload(results: Path, name: str) -> dict:
    return json.loads((results / f"{name}.json").read_text())


def payload_times(results: Path, name: str) -> list:
    return list(payload(results, name)["train_seconds"].values())
