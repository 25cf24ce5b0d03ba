"""experiments/representations.py runs end to end in --quick mode and writes its table, JSON and plots."""

from __future__ import annotations

from experiment_runner import PNG, data_dir, payload, payload_times, run_script  # noqa: F401 (fixture)

NAME = "representations"


def test_runs_and_writes_results(data_dir, tmp_path):
    results = run_script(NAME, data_dir, tmp_path)
    md = (results / f"{NAME}.md").read_text()
    for row in ["| fa |", "| frsf |", "| pfa |"]:
        assert row in md, row
    assert "checked" in md and ("**yes**" in md or "**no**" in md) and "Training time:" in md
    assert all(t is not None and t > 0 for t in payload_times(results, NAME))
    p = payload(results, NAME)
    assert p["machine"] and p["results"]
    for plot in ["representations-mlp.png", "representations-lenet.png"]:
        assert (results / plot).read_bytes()[:8] == PNG
