"""Seeds, spreads and verdicts: how every experiment here turns runs into a claim checked.

Every cell of a results table is a mean over seeds ± the sample standard deviation across them
(``pm``). A claim is checked on *paired* effects: the same seed gives both arms their data
order and, where the arms share an architecture, their initial weights, so the effect of seed s
is ``a_s − b_s`` (or a difference of such differences). The criterion, written here before any
run and printed with every verdict (:data:`CRITERION`):

* **agrees**: the mean effect has the claimed sign, exceeds twice the pooled seed std of the
  quantities compared, and every seed's effect has the claimed sign;
* **disagrees**: the same, with the opposite sign;
* **inconclusive**: anything else (too few seeds, a spread as large as the effect, seeds that
  disagree).

A claim that compares a rule with BP is inconclusive unless BP reached its plateau
(:func:`plateaued`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

CRITERION = ("agrees: the mean paired effect has the claimed sign, exceeds 2× the pooled seed std of the "
             "quantities compared, and has that sign in every seed; disagrees: the same with the opposite "
             "sign; otherwise inconclusive (fewer than 3 seeds is always inconclusive)")
MIN_SEEDS = 3
PLATEAU_POINTS = 0.5  # BP has plateaued when its test accuracy rose by less than this over its last epochs
PLATEAU_EPOCHS = 2    # ... measured over this many final epochs


def finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and v == v and math.isfinite(v)]


def mean(values) -> float:
    v = finite(values)
    return statistics.fmean(v) if v else float("nan")


def std(values) -> float:
    """Sample standard deviation (n − 1); 0 for one value, nan for none."""
    v = finite(values)
    if not v:
        return float("nan")
    return statistics.stdev(v) if len(v) > 1 else 0.0


def pooled(*groups) -> float:
    """√(mean of the groups' variances): the seed spread of quantities compared side by side."""
    sds = [std(g) for g in groups]
    sds = [s for s in sds if s == s]
    return math.sqrt(statistics.fmean(s * s for s in sds)) if sds else float("nan")


def pm(values, digits: int = 1, scale: float = 1.0) -> str:
    """"mean ± std" of ``values`` × ``scale`` (— when there are none)."""
    v = finite(values)
    if not v:
        return "—"
    return f"{mean(v) * scale:.{digits}f} ± {std(v) * scale:.{digits}f}"


@dataclass
class Verdict:
    """A claim checked on per-seed paired effects."""

    claim: str               # what the paper says, as a sentence
    effects: list[float]     # per seed, oriented so that the claim says > 0
    noise: float             # the pooled seed std of the quantities compared
    unit: str = "points"
    blocked: str = ""        # a reason the claim cannot be judged (e.g. BP not at its plateau)
    result: str = field(init=False)

    def __post_init__(self) -> None:
        self.result = judge(self.effects, self.noise) if not self.blocked else "inconclusive"

    def line(self, digits: int = 2) -> str:
        e = finite(self.effects)
        if not e:
            return (f"- {self.claim}: **{self.result}** (no seed where both arms finished: a run that "
                    "diverged or did not run is left out)")
        seeds = ", ".join(f"{x:+.{digits}f}" for x in e)
        why = f"; {self.blocked}" if self.blocked else ""
        return (f"- {self.claim}: **{self.result}** (effect {mean(e):+.{digits}f} {self.unit}, per seed "
                f"[{seeds}], 2 × pooled std {2 * self.noise:.{digits}f}{why})")

    def as_dict(self) -> dict:
        return {"claim": self.claim, "result": self.result, "effects": self.effects, "noise": self.noise,
                "unit": self.unit, "blocked": self.blocked}


def judge(effects, noise: float) -> str:
    """``"agrees"``, ``"disagrees"`` or ``"inconclusive"`` by :data:`CRITERION`."""
    e = finite(effects)
    if len(e) < MIN_SEEDS or noise != noise:
        return "inconclusive"
    m = mean(e)
    if abs(m) <= 2 * noise:
        return "inconclusive"
    sign = 1 if m > 0 else -1
    if not all(x * sign > 0 for x in e):
        return "inconclusive"
    return "agrees" if sign > 0 else "disagrees"


def plateaued(curves: list[list[float | None]], points: float = PLATEAU_POINTS, epochs: int = PLATEAU_EPOCHS) -> bool:
    """True when the seed-mean test accuracy (fractions, one list per seed, one entry per epoch;
    None for an epoch without a test pass, ``eval_every``) rose by less than ``points`` percentage
    points from the latest epoch at least ``epochs`` before the last to the last (the last epoch
    and that one measured in every seed; a longer span than ``epochs`` only makes it stricter)."""
    curves = [c for c in curves if len(c) > epochs]
    if not curves:
        return False
    n = min(len(c) for c in curves)
    m = [None if any(c[i] is None for c in curves) else mean([c[i] for c in curves]) for i in range(n)]
    before = [x for x in m[:n - epochs] if x is not None]
    return m[-1] is not None and bool(before) and 100 * (m[-1] - before[-1]) < points


def plateau_text(ok: bool) -> str:
    return (f"BP at its plateau (seed-mean test accuracy rose < {PLATEAU_POINTS} points over its last "
            f"{PLATEAU_EPOCHS} epochs): {'yes' if ok else 'no'}")
