"""experiments/feedback_dimension.py: --quick runs end to end with its three tasks, the three rank-r
families next to bp, fa and dfa, mean ± std cells and verdicts (all inconclusive on one seed)."""

from __future__ import annotations

import re

from experiment_runner import PNG, data_dir, payload, payload_times, run_script  # noqa: F401 (fixture)

NAME = "feedback_dimension"
D = {"mlp": 10, "teacher": 5, "cnn": 10}
PM = re.compile(r"-?\d+\.\d+ ± \d+\.\d+")


def _section(md: str, task: str) -> str:
    return md.split(f"## {task}:")[1].split("\n## ")[0]


def test_feedback_dimension_has_every_arm_mean_std_cells_and_verdicts(data_dir, tmp_path):
    results = run_script(NAME, data_dir, tmp_path)
    md = (results / f"{NAME}.md").read_text()
    assert "Verdict criterion" in md and "mean ± std over seeds 0" in md
    p = payload(results, NAME)
    assert set(p["results"]) == set(D) and p["seeds"] == [0, 1, 2]
    for task, d in D.items():
        sec = _section(md, task)
        arms = set(p["results"][task]["arms"])
        sweep = task != "cnn"
        want = {"bp", "fa", "dfa", f"ldfa-r{d}", f"fixed-r{d}", f"direct-r{d}"}
        want |= {"ldfa-r1", "fixed-r1", "direct-r1", "ldfa-rfull"} if sweep else set()
        assert arms == want, (task, arms)
        assert f"| {d} |" in sec and ("| full |" in sec) == sweep and ("| 1 |" in sec) == sweep
        for arm in ("bp", "fa", "dfa"):  # baselines as mean ± std
            assert PM.search(sec.split(f"{arm}: ")[1].split(";")[0]), (task, arm)
        row = next(line for line in sec.splitlines() if line.startswith(f"| {d} |") and "±" in line)
        assert len(PM.findall(row)) == 3, row  # ldfa, direct, fixed at r = d
        assert "BP at its plateau" in sec and "### Claims" in sec
        claims = p["verdicts"][task]["claims"]
        assert len(claims) == (6 if sweep else 8), (task, len(claims))
        per_rank = p["verdicts"][task]["per_rank_within_margin_of_bp"]
        assert set(per_rank["ldfa"]) == ({"1", str(d), "full"} if sweep else {str(d)})
        every = claims + [v for f in per_rank.values() for v in f.values()]
        # one seed in --quick: every verdict must say it cannot tell
        assert {v["result"] for v in every} == {"inconclusive"}, task
    assert p["verdicts"]["teacher"]["claims"][0]["unit"].startswith("% of MSE")
    assert "ldfa at r = d = 10 beats fa on the CNN" in md
    assert (results / f"{NAME}.png").read_bytes()[:8] == PNG
    assert all(t is not None and t > 0 for t in payload_times(results, NAME))


def test_the_mse_plateau_keeps_epochs_without_a_test_pass_in_place():
    from experiment_runner import experiment

    m = experiment(NAME)
    flat, falling = [None, 0.60, None, 0.50, None, 0.49], [None, 0.50, None, 0.40, None, 0.30]  # epochs 4 → 6
    assert m.bp_plateaued({"metric": "test_loss", "arms": {"bp": {"curve": [flat] * 3}}})
    assert not m.bp_plateaued({"metric": "test_loss", "arms": {"bp": {"curve": [falling] * 3}}})
