"""benchmarks/speed.py: the --quick logic in-process on a tiny MLP (a few seconds)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("alignlab_bench_speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def tiny(speed, **kw):
    args = dict(nets=["mlp"], rules=["fa", "dfa"], rounds=2, warmup=1, batch=8, memory=False, quick=True)
    args.update(kw)
    return speed.Settings(**args)


def test_quick_run_structure_and_ratios(speed, tmp_path):
    report = speed.run_benchmark(tiny(speed), log=lambda *a: None)
    assert report["quick"] and report["torch"] and report["machine"]["cpu"]
    assert report["machine"]["torch_threads"] >= 1
    entry = report["nets"]["mlp"]
    assert entry["rounds"] == 2 and entry["reference"] == "torch"
    results = entry["results"]
    assert list(results) == ["torch", "fa", "dfa"]
    for label, r in results.items():
        assert len(r["ratios"]) == 2 and len(r["ms_per_round"]) == 2
        for value in [r["median_ms"], r["median_ratio"], *r["ratios"], *r["ratio_iqr"]]:
            assert math.isfinite(value) and value > 0, (label, value)
        assert math.isfinite(r["final_loss"])
    assert results["torch"]["ratios"] == [1.0, 1.0]
    assert results["fa"]["speed_target"] == 1.03 and isinstance(results["fa"]["speed_holds"], bool)
    assert results["dfa"]["speed_target"] == 0.85

    js, md = speed.write_outputs(report, tmp_path)
    assert js.name == "speed-quick.json"
    assert json.loads(js.read_text())["nets"]["mlp"]["results"]["fa"]["ratios"] == results["fa"]["ratios"]
    text = md.read_text()
    assert "| rule | ms/step | ratio to BP" in text and "| fa |" in text and "| dfa |" in text


def test_memory_figures_and_target(speed):
    settings = tiny(speed)
    mem = {label: speed.memory_worker(settings, "mlp", label) for label in ("torch", "fa")}
    assert mem["torch"]["feedback_bytes"] == 0
    # the tiny MLP's three Linear layers: B shaped like each W, float32
    sizes = [(32, 64), (32, 32), (10, 32)]
    assert mem["fa"]["feedback_bytes"] == 4 * sum(a * b for a, b in sizes)
    assert all(m["peak_bytes"] > 0 for m in mem.values())
    results = {"torch": {"kind": "reference"}, "fa": {"kind": "alignlab"}}
    speed.memory_verdicts(mem, results)
    if mem["torch"]["start_bytes"] is not None:  # Linux: peaks are compared over each process's start
        training = {k: m["peak_bytes"] - m["start_bytes"] for k, m in mem.items()}
        assert results["fa"]["memory"]["delta_vs_bp_bytes"] == training["fa"] - training["torch"]
    assert isinstance(results["fa"]["memory"]["holds"], bool)


def test_feedback_bytes_counts_only_feedback(speed):
    import torch

    import alignlab

    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert speed.feedback_bytes(net) == 0
    alignlab.convert(net, rule="frsf")
    assert speed.feedback_bytes(net) == 4 * (5 * 3 + 3 * 2)


def test_missing_biotorch_is_one_line(speed, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "biotorch", None)  # import biotorch now raises ImportError
    monkeypatch.setitem(sys.modules, "biotorch.module.biomodule", None)
    with pytest.raises(SystemExit) as exc:
        speed.require_biotorch()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps biotorch==0.0.16" in err


def test_bad_net_or_rule_is_one_line(speed, capsys):
    for argv in (["--nets", "vgg"], ["--rules", "fa,nope"]):
        with pytest.raises(SystemExit) as exc:
            speed.settings_from(speed.parse_args(argv))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("speed.py: error: unknown")


def test_alignlab_bench_runs_the_benchmark_script():
    """`alignlab bench ...` hands every option to benchmarks/speed.py and returns its status."""
    import subprocess

    run = lambda *a: subprocess.run([sys.executable, "-m", "alignlab.cli", "bench", *a], capture_output=True, text=True)
    shown = run("--help")
    assert shown.returncode == 0 and "--biotorch" in shown.stdout and "--rounds" in shown.stdout
    bad = run("--nets", "vgg")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "vgg" in bad.stderr


def test_alignlab_bench_without_the_source_tree_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from alignlab import cli

    monkeypatch.setattr(cli, "speed_script", lambda: tmp_path / "benchmarks" / "speed.py")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alignlab: error: ") and "speed.py not found" in err[0]
