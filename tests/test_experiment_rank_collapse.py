"""experiments/rank_collapse.py: --quick runs end to end with its depth axis, BP controls and
verdicts (all inconclusive on one seed)."""

from __future__ import annotations

from experiment_runner import PNG, data_dir, payload, payload_times, run_script  # noqa: F401 (fixture)


def test_rank_collapse_has_a_depth_axis_bp_controls_and_verdicts(data_dir, tmp_path):
    results = run_script("rank_collapse", data_dir, tmp_path)
    md = (results / "rank_collapse.md").read_text()
    for arm in ("bp", "bp+muon", "bp+norm", "bp+muon+norm", "fa", "fa+muon", "fa+norm", "fa+muon+norm"):
        assert f"| {arm} |" in md, arm
    assert "| depth 2 | depth 4 |" in md and "fa+norm − bp+norm" in md and "Verdict criterion" in md
    p = payload(results, "rank_collapse")
    for family in ("mlp", "cnn"):
        assert (results / f"rank_collapse-{family}.png").read_bytes()[:8] == PNG
        verdicts = p["verdicts"][family]
        assert len(verdicts) == 12  # 2 on the gap, 2 per remedy on accuracy, 1 + 1 per remedy on rank
        # one seed in --quick: every verdict must say it cannot tell
        assert {v["result"] for v in verdicts} == {"inconclusive"}
        assert set(p["results"][family]) == {"2", "4"}
    assert all(t is not None and t > 0 for t in payload_times(results, "rank_collapse"))

    assert "Runs: all 32 planned runs finished." in md and p["runs_finished"] == p["runs_planned"] == 32

    # --report-only: the finished runs, none trained, the count said
    import shutil
    shutil.rmtree(tmp_path / "runs" / "rank_collapse-quick" / "cnn4-fa-s0")
    results = run_script("rank_collapse", data_dir, tmp_path, "--report-only")
    md = (results / "rank_collapse.md").read_text()
    assert "Interim results: 31 of the 32 planned runs finished" in md
    assert not (tmp_path / "runs" / "rank_collapse-quick" / "cnn4-fa-s0").exists()
    assert "| depth 2 | depth 4 |" in md  # the cnn table keeps depth 4, without fa's cell there
    # --report-only before any run finished: one line, exit non-zero, no results written
    empty = tmp_path / "empty"
    run_script("rank_collapse", data_dir, empty, "--report-only", fails="no finished run under")
    assert not (empty / "results").exists()

    # a run left by another design of the experiment is neither reused nor overwritten
    config = tmp_path / "runs" / "rank_collapse-quick" / "mlp2-bp-s0" / "config.yaml"
    changed = config.read_text().replace("epochs: 1", "epochs: 7")
    assert changed != config.read_text()
    config.write_text(changed)
    run_script("rank_collapse", data_dir, tmp_path, fails="holds a run of another config (differs in epochs)")
    assert config.read_text() == changed
