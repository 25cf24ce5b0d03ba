"""experiments/stats.py: spreads, the verdict criterion and BP's plateau check."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from stats import Verdict, judge, mean, plateaued, pm, pooled, std  # noqa: E402


def test_mean_std_and_pm():
    assert mean([1.0, 2.0, 3.0]) == 2.0 and std([1.0, 2.0, 3.0]) == 1.0
    assert std([5.0]) == 0.0 and math.isnan(std([])) and math.isnan(mean([float("nan")]))
    assert pm([0.85, 0.87, 0.86], 2, 100) == "86.00 ± 1.00"
    assert pm([]) == "—"
    assert pooled([1.0, 3.0], [2.0, 2.0]) == pytest.approx(math.sqrt((2.0 + 0.0) / 2))


@pytest.mark.parametrize("effects, noise, result", [
    ([2.0, 3.0, 2.5], 0.5, "agrees"),        # 2.5 > 2·0.5, every seed positive
    ([-2.0, -3.0, -2.5], 0.5, "disagrees"),  # the same, the other sign
    ([2.0, 3.0, 2.5], 1.5, "inconclusive"),  # 2.5 < 2·1.5
    ([4.0, 4.0, -0.5], 0.5, "inconclusive"),  # one seed has the other sign
    ([3.0, 3.0], 0.1, "inconclusive"),       # two seeds are never enough
    ([1.0, 1.0, 1.0], 0.5, "inconclusive"),  # exactly 2·noise does not exceed it
    ([1.0, 1.0, float("nan")], 0.1, "inconclusive"),
])
def test_judge(effects, noise, result):
    assert judge(effects, noise) == result


def test_a_blocked_verdict_is_inconclusive_and_says_why():
    v = Verdict("x beats y", [5.0, 6.0, 7.0], 0.1, blocked="BP had not reached its plateau")
    assert v.result == "inconclusive" and "plateau" in v.line()
    ok = Verdict("x beats y", [5.0, 6.0, 7.0], 0.1)
    assert ok.result == "agrees" and "[+5.00, +6.00, +7.00]" in ok.line() and ok.as_dict()["noise"] == 0.1
    none = Verdict("x beats y", [], float("nan"))  # every run of an arm diverged
    assert none.result == "inconclusive" and "nan" not in none.line() and "no seed where both arms finished" in none.line()


def test_plateau():
    rising = [[0.80, 0.84, 0.86, 0.88]] * 3  # +4 points over the last two epochs
    flat = [[0.80, 0.862, 0.863, 0.865], [0.81, 0.861, 0.862, 0.866], [0.80, 0.861, 0.861, 0.864]]  # +0.37
    assert not plateaued(rising) and plateaued(flat)
    assert not plateaued([[0.8, 0.9]])  # too few epochs to tell
    gaps = [[None, 0.80, None, 0.862, None, 0.865]] * 3  # eval_every=2: epochs 4 → 6, +0.3
    assert plateaued(gaps) and not plateaued([[None, 0.80, None, 0.84, None, 0.86]] * 3)
    assert not plateaued([[0.80, 0.862, 0.863, None]] * 3)  # the last epoch unmeasured: cannot tell
    assert not plateaued([[0.80, 0.84, None, 0.86]] * 3)  # 2 → 4 (+2), not 3 → 4
