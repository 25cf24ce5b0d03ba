"""Packaging: ``pip install alignlab`` needs torch and numpy only; the lab is the ``lab`` extra.

Each check runs Python in a subprocess whose first act is a ``sys.meta_path`` finder that makes
the lab's modules (yaml, tqdm, tensorboardX, matplotlib) unimportable, as if the extra were not
installed. torch imports tqdm by itself when it is there (torch.hub) and copes when it is not,
so the checks fail only when alignlab's own code needs a lab module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB_MODULES = ("yaml", "tqdm", "tensorboardX", "matplotlib")
INSTALL_HINT = "pip install 'alignlab[lab]'"

BLOCKER = """\
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""


def run_without(blocked: tuple[str, ...], code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the ``blocked`` modules cannot be imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    return subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked) + code],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def run_cli_without(blocked: tuple[str, ...], *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m alignlab ARGV...`` without the ``blocked`` modules."""
    code = f"import runpy, sys\nsys.argv = ['alignlab', *{list(argv)!r}]\nrunpy.run_module('alignlab', run_name='__main__')\n"
    return run_without(blocked, code, cwd)


def test_pyproject_core_needs_torch_and_numpy_only() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for r in requirements}

    assert names(project["dependencies"]) == {"torch", "numpy"}
    extras = project["optional-dependencies"]
    assert names(extras["lab"]) == {"pyyaml", "tqdm", "tensorboardX", "matplotlib"}
    assert "alignlab[lab]" in extras["test"]


def test_core_imports_and_converts_without_the_lab() -> None:
    code = """
import torch
import alignlab
import alignlab.convert, alignlab.rules, alignlab.nn, alignlab.diagnostics, alignlab.optim, alignlab.saving
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
assert alignlab.convert(net, rule="fa") is net
assert len(alignlab.converted_layers(net)) == 2
torch.nn.functional.cross_entropy(net(torch.randn(5, 4)), torch.tensor([0, 1, 0, 1, 1])).backward()
assert all(p.grad is not None for p in net.parameters())
print("ok", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""
    proc = run_without(LAB_MODULES, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok []"


def test_cli_rules_works_without_the_lab() -> None:
    proc = run_cli_without(LAB_MODULES, "rules")
    assert proc.returncode == 0, proc.stderr
    assert {"bp", "fa", "dfa"} <= set(proc.stdout.split())


def assert_one_line_naming(proc: subprocess.CompletedProcess, module: str) -> None:
    assert proc.returncode not in (0, None), proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("alignlab: error: ") and repr(module) in lines[0] and INSTALL_HINT in lines[0], lines[0]


@pytest.mark.parametrize("module", ["yaml", "tqdm", "tensorboardX"])
def test_cli_train_without_a_lab_module_says_install_the_extra(module: str, tmp_path: Path) -> None:
    proc = run_cli_without((module,), "train", "epochs=1", cwd=tmp_path)
    assert_one_line_naming(proc, module)
    assert not any(tmp_path.iterdir())  # failed before it started a run


def test_cli_compare_without_the_lab_says_install_the_extra(tmp_path: Path) -> None:
    proc = run_cli_without(LAB_MODULES, "compare", "--rules", "bp,fa", cwd=tmp_path)
    assert_one_line_naming(proc, "yaml")


def fake_run(root: Path) -> Path:
    """A finished run directory, the files written as JSON (which is YAML too)."""
    run = root / "mlp-fa-s0"
    run.mkdir()
    config = {"rule": "fa", "rule_options": {}, "seed": 0, "epochs": 1, "batch_size": 8,
              "data": {"name": "fashion-mnist", "batch_size": 8}, "model": {"name": "mlp", "norm": "none"},
              "optim": {"name": "adam", "lr": 0.001}, "name": "mlp-fa-s0"}
    (run / "config.yaml").write_text(json.dumps(config))
    (run / "meta.json").write_text(json.dumps({"alignlab_version": "0.1.0", "git_commit": None,
                                               "torch_version": "2.13.0", "started": "2025-01-01T12:00:00+00:00",
                                               "device": "cpu"}))
    line = {"epoch": 1, "step": 10, "train_loss": 1.0, "train_acc": None, "test_loss": 0.9, "test_acc": 0.7,
            "epoch_time": 1.0, "lr": 0.001}
    (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "done", "final": line}))
    return run


@pytest.mark.parametrize("module", ["yaml", "matplotlib"])
def test_cli_report_without_a_lab_module_says_install_the_extra(module: str, tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    proc = run_cli_without((module,), "report", str(run), "-o", str(tmp_path / "report"))
    assert_one_line_naming(proc, module)
