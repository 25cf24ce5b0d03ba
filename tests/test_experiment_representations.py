"""experiments/representations.py: --quick runs end to end with the paper's five arms, both
inits, the BP-vs-BP ceiling, the untrained floor, the accuracy regression and verdicts (all
inconclusive on one seed)."""

from __future__ import annotations

import math
import re

from experiment_runner import PNG, data_dir, experiment, payload, payload_times, run_script  # noqa: F401 (fixture)

NAME = "representations"
RULES = ("fa-random", "fa-toeplitz", "usf-init", "usf-sn")


def test_representations_has_five_arms_both_inits_ceiling_floor_and_verdicts(data_dir, tmp_path):
    results = run_script(NAME, data_dir, tmp_path)
    md = (results / f"{NAME}.md").read_text()
    for section in ("## CKA to BP, own init", "## CKA to BP, same init as BP", "## What sharing BP's initial weights"):
        assert section in md, section
    for row in RULES + ("untrained (floor)",):
        assert md.count(f"| {row} |") == 3, row  # own, same, same − own
    assert md.count("| bp (ceiling) |") == 1
    assert "| conv1 | conv2 | fc1 | fc2 | head |" in md and "Pearson r =" in md
    cells = re.findall(r"\| (-?\d+\.\d+ ± \d+\.\d+) ", md)
    assert len(cells) > 50  # every numeric cell is mean ± std
    assert "Verdict criterion" in md and "Training time:" in md
    p = payload(results, NAME)
    verdicts = p["verdicts"]
    assert [len(verdicts[k]) for k in ("own", "same", "init")] == [12, 6, 4]
    # one seed in --quick: every verdict must say it cannot tell
    assert {v["result"] for vs in verdicts.values() for v in vs} == {"inconclusive"}
    s = p["results"]
    assert s["layers"] == ["conv1", "conv2", "fc1", "fc2", "head"] and s["seeds"] == [0]
    own = s["conditions"]["own"]["rows"]
    assert set(own) == set(RULES) | {"bp (ceiling)", "untrained (floor)"}
    assert all(0 < x <= 1.0 + 1e-9 for x in own["bp (ceiling)"]["cka"]["fc1"])
    assert s["conditions"]["own"]["fit"]["n"] == 5 and s["conditions"]["same"]["fit"]["n"] == 4
    for plot in ("layers", "accuracy"):
        assert (results / f"{NAME}-{plot}.png").read_bytes()[:8] == PNG
    assert len(payload_times(results, NAME)) == 10
    assert all(t is not None and t > 0 for t in payload_times(results, NAME))

    # a run that diverged or did not finish leaves NaN in its own seed's place: every other arm
    # keeps its per-seed list, so the paired effects stay paired, and the tables say "—"
    m = experiment("representations")
    runs = tmp_path / "runs" / f"{NAME}-quick"
    dirs = {d.name: d for d in runs.iterdir() if d.name not in ("usf-sn-s1000", "bp-s1000")}
    s = m.summarise(dirs)
    own = s["conditions"]["own"]["rows"]
    assert s["seeds"] == [0] and len(own["usf-sn"]["hidden"]) == len(own["usf-init"]["hidden"]) == 1
    assert math.isnan(own["usf-sn"]["hidden"][0]) and math.isnan(own["usf-sn"]["test_acc"][0])
    assert math.isnan(own["bp (ceiling)"]["hidden"][0]) and not math.isnan(own["usf-init"]["hidden"][0])
    assert s["conditions"]["own"]["fit"]["n"] == 3
    md = m.markdown(s)
    assert "| usf-sn | — | — | — |" in md and "| bp (ceiling) | — | — | — |" in md
    assert "usf-sn's hidden CKA to BP exceeds fa-random's: **inconclusive** (no seed where both arms finished" in md
