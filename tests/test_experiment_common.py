"""experiments/common.py: a run that diverges is an outcome — marked, kept (not trained again on
the next invocation), counted as finished and left out of the summaries."""

from __future__ import annotations

import json

from experiment_runner import data_dir, experiment  # noqa: F401 (fixture)


def _common():
    return experiment("common")


def test_a_diverged_run_is_marked_kept_and_not_retrained(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNLAB_DATA", str(data_dir))
    common = _common()
    over = ["model.name=mlp", "rule=bp", "optim.name=sgd", "diagnostics.enabled=false"]
    arms = [common.Arm("fine", common.config("fashion-mnist.yaml", *over, "optim.lr=0.01", quick=True)),
            common.Arm("blowup", common.config("fashion-mnist.yaml", *over, "optim.lr=1e30", quick=True))]
    out = tmp_path / "runs"
    dirs = common.run_arms(arms, out, quick=True)
    assert set(dirs) == {"fine", "blowup"}
    assert not common.diverged(dirs["fine"]) and common.diverged(dirs["blowup"])
    marker = json.loads((dirs["blowup"] / common.DIVERGED).read_text())
    assert "loss is" in marker["error"] and marker["epochs_finished"] == 0
    assert common._diverged_at(dirs["blowup"]) == "in epoch 1"  # what the results' Runs line says
    assert "blowup: loss is" in capsys.readouterr().err
    stamp = (dirs["blowup"] / common.DIVERGED).stat().st_mtime_ns
    again = common.run_arms(arms, out, quick=True)  # nothing is trained again
    assert again == dirs and (dirs["blowup"] / common.DIVERGED).stat().st_mtime_ns == stamp
    err = capsys.readouterr().err
    assert "fine: finished earlier, kept" in err and "blowup: diverged earlier, kept" in err
    assert common.finished_arms(arms, out) == dirs  # --report-only counts it as finished
