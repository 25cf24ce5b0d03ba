"""How many dimensions does the error feedback need? (Hanut & Kadmon, "Training large neural
networks with low-dimensional error feedback", arXiv 2502.20580.)

The paper's claims, as checked here:

1. feedback through a rank-r bottleneck that *learns* (ldfa: P by Oja's rule on the error, Q by
   a Kolen-Pollack-type rule) matches BP once r is on the order of the task's output dimension d;
2. *fixed* random feedback of the same rank does not: learning the bottleneck is what helps;
3. the same holds for direct feedback (the authors' rADFA: the output error, compressed by each
   layer's own learned P, straight to every layer), against its fixed counterpart dfa;
4. low-dimensional learned feedback trains convnets, which resist FA.

(Direct feedback to a conv layer here is dfa's broadcast: each sample's compressed error, summed
over positions, reaches every input position; the authors' conv variant, a kernel-shaped Q fed
a positional error, is not implemented: docs/rules.md#ldfa.)

Design. Three tasks, each with bp, fa and dfa next to three families of rank-r feedback:
*ldfa* (layer-wise, P and Q learned), *direct* (ldfa with ``direct=true``, rADFA; its rank is at
most C = d, so it runs at r ≤ d) and *fixed* (layer-wise ldfa with ``learn_p=false,
learn_q=false``: B = PᵀP B₀, FA through an r-dimensional bottleneck; at full rank it is fa, and
direct fixed feedback of rank C is dfa):

* mlp: Fashion-MNIST (d = 10 classes), MLP 784-256-256-10, all 60 000 training images,
  10 epochs, r ∈ {1, 2, 5, 10, full} (full: each layer's output width, 256): test accuracy;
* teacher: a linear teacher y = xW* (d_in = 100, d = 5 outputs, 10 000 samples), MLP
  100-256-256-5, 20 epochs, r ∈ {1, 2, 5, 10, full}: test mean squared error;
* cnn: Fashion-MNIST on LeNet-5, all 60 000 training images, 10 epochs, r = d = 10 only
  (conv1 has 6 channels, so its layer-wise P is 6 × 6).

Every arm trains with the setting of the previous version of this script (and of the old shared rule runs):
SGD (momentum 0.9, lr 0.01, cosine to 0, L2 decay 1e-3, batch 128); the decay is what makes Q
track P·W. Seeds 0, 1, 2; a seed fixes the initial weights, the feedback and the data order, so
arms of one task are paired by seed. Claims are checked at r = d by the criterion in
``stats.py`` on per-seed paired effects of a *score*: test accuracy in points, or for the
teacher −100·ln(test MSE) (a difference of 1 is a 1 % ratio of MSEs), so that > 0 always means
"better". "Within a margin of BP" (1 point; 10 % of BP's MSE; one-sided: better than BP is
within) has the effect margin − (BP − rule), > 0 when the rule is within the margin. A claim
that compares with BP is inconclusive unless BP reached its plateau. Beyond the claims at r = d,
every rank of every family gets the same "within the margin of BP" verdict, and the table names
the smallest r whose verdict agrees.

``--dataset cifar10|cifar100`` switches the two image tasks (d = the number of classes, added
to the rank grid). Diagnostics are off: the claims are about test accuracy and MSE.

    python experiments/feedback_dimension.py        # about 75 min on 2 quiet CPU cores (111 runs)

The estimate: the previous version's per-run times on this machine (5 epochs of the MLP: bp
14 s, fa 15 s, ldfa 20–23 s, full-rank ldfa 32 s, fixed 15–18 s; 20 epochs of the teacher:
9–19 s) and the old shared LeNet-5 runs (5 epochs: bp 47 s, fa 50 s), with ldfa on LeNet-5
at the 1.7× of BP's step time that benchmarks/speed.py measured: per seed about 10 min for the MLP
(16 runs of 10 epochs), 3 min for the teacher (15 runs) and 12 min for LeNet-5 (6 runs of
10 epochs), 25 min in all, 3 seeds.

writes experiments/results/feedback_dimension.{md,json} and feedback_dimension.png.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common import Arm, config, machine, new_figure, run_experiment, table
from stats import CRITERION, PLATEAU_EPOCHS, Verdict, finite, mean, plateau_text, plateaued, pm, pooled, std
from alignlab.train import rundir

NAME = "feedback_dimension"
SEEDS = (0, 1, 2)
GRID = (1, 2, 5, 10)  # ranks below full, with d added; --quick: QUICK_GRID
QUICK_GRID = (1,)
SGD = ("optim.name=sgd", "optim.lr=0.01", "optim.momentum=0.9", "optim.weight_decay=0.001", "optim.schedule=cosine")
FIXED = ("rule_options.learn_p=false", "rule_options.learn_q=false")
CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class Task:
    title: str
    config: str
    overrides: tuple[str, ...]
    images: bool  # an image task: --dataset switches it
    sweep: bool   # the whole rank grid; False: r = d only
    metric: str   # test_acc or test_loss (MSE)


TASKS = {
    "mlp": Task("MLP, 2 hidden layers of 256, all training images, 10 epochs", "fashion-mnist.yaml",
                ("model.name=mlp", "epochs=10"), True, True, "test_acc"),
    "teacher": Task("linear teacher (d_in 100, 10 000 samples), MLP 100-256-256-5, 20 epochs", "teacher.yaml",
                    ("data.options.d_out=5", "epochs=20"), False, True, "test_loss"),
    "cnn": Task("LeNet-5, all training images, 10 epochs", "fashion-mnist.yaml",
                ("model.name=lenet", "epochs=10"), True, False, "test_acc"),
}
MARGIN = {"test_acc": (1.0, "1 point of BP"), "test_loss": (100 * math.log(1.1), "10 % of BP's MSE")}  # or better
UNIT = {"test_acc": "points", "test_loss": "% of MSE (100·ln ratio)"}
PLATEAU_MSE = 5.0  # teacher: BP has plateaued when 100·ln(test MSE) fell by less than this over its last epochs
FAMILIES = {"ldfa": "ldfa (layer-wise, learned P, Q)", "direct": "direct ldfa (rADFA, learned)",
            "fixed": "fixed random rank r (layer-wise)"}


def task_d(task: str, dataset: str) -> int:
    return 5 if task == "teacher" else CLASSES[dataset]


def ranks(d: int, sweep: bool, quick: bool) -> list:
    grid = (QUICK_GRID if quick else GRID) if sweep else ()
    return sorted({*grid, d}) + (["full"] if sweep else [])


def variants(d: int, sweep: bool, quick: bool) -> dict[str, list[str]]:
    """{arm name: rule overrides}: bp, fa, dfa and the three rank-r families."""
    out = {"bp": ["rule=bp"], "fa": ["rule=fa"], "dfa": ["rule=dfa"]}
    for r in ranks(d, sweep, quick):
        ldfa = ["rule=ldfa", f"rule_options.rank={r}"]
        out[f"ldfa-r{r}"] = ldfa
        if r != "full":
            out[f"fixed-r{r}"] = [*ldfa, *FIXED]
        if r != "full" and r <= d:  # direct ranks above d are d (P is r × C)
            out[f"direct-r{r}"] = [*ldfa, "rule_options.direct=true"]
    return out


def arms(plan) -> list[Arm]:
    out = []
    for task, t in TASKS.items():
        data = plan.data() if t.images else []
        for name, rule in variants(task_d(task, plan.dataset), t.sweep, plan.quick).items():
            for seed in plan.pick_seeds(SEEDS):
                cfg = config(t.config, *data, *t.overrides, *SGD, *rule, f"seed={seed}",
                             "diagnostics.enabled=false", quick=plan.quick)
                out.append(Arm(f"{task}-{name}-s{seed}", cfg))
    return out


def _d(task: str, runs: list[Path]) -> int:
    """The task's output dimension, from the dataset its runs trained on."""
    cfg = next(rundir.read_config(r) for r in runs if (r / rundir.CONFIG).is_file())
    return task_d(task, cfg["data"]["name"])


def summarise(dirs: dict[str, Path]) -> dict:
    """{task: {d, metric, seeds, arms: {arm: {final: [per seed], curve: [per seed]}}}}."""
    out = {}
    for task, t in TASKS.items():
        mine = {k[len(task) + 1:]: v for k, v in dirs.items() if k.startswith(task + "-")}
        if not mine:
            continue
        seeds = sorted({int(k.rsplit("-s", 1)[1]) for k in mine})
        arms_ = {}
        for name in dict.fromkeys(k.rsplit("-s", 1)[0] for k in mine):  # a seed with no finished run: None
            hist = [rundir.read_lines(mine[f"{name}-s{s}"] / rundir.METRICS) if f"{name}-s{s}" in mine else []
                    for s in seeds]
            arms_[name] = {"final": [h[-1].get(t.metric) if h else None for h in hist],
                           "curve": [[m.get(t.metric) for m in h] for h in hist]}
        out[task] = {"d": _d(task, list(mine.values())), "metric": t.metric, "seeds": seeds, "arms": arms_}
    return out


# --- scores, effects and verdicts -----------------------------------------------------------


def score(x: dict, arm: str) -> list:
    """Per seed: test accuracy in points, or −100·ln(test MSE); higher is better (None: no run)."""
    vals = x["arms"][arm]["final"] if arm in x["arms"] else []
    ok = lambda v: v is not None and v == v and (x["metric"] == "test_acc" or v > 0)
    f = (lambda v: 100 * v) if x["metric"] == "test_acc" else (lambda v: -100 * math.log(v))
    return [f(v) if ok(v) else None for v in vals]


def paired(a: list, b: list) -> list[float]:
    """Per-seed a − b over the seeds where both ran."""
    return [p - q for p, q in zip(a, b) if p is not None and q is not None]


def bp_plateaued(x: dict) -> bool:
    if "bp" not in x["arms"]:
        return False
    if x["metric"] == "test_acc":
        return plateaued(x["arms"]["bp"]["curve"])
    logs = [[-math.log(v) if v and v > 0 else None for v in c] for c in x["arms"]["bp"]["curve"]]  # None: no test pass
    return plateaued(logs, points=PLATEAU_MSE)


def bp_plateau_text(x: dict) -> str:
    ok = bp_plateaued(x)
    if x["metric"] == "test_acc":
        return plateau_text(ok)
    return (f"BP at its plateau (seed-mean test MSE fell by less than 5 % — 0.05 in ln MSE — over its last "
            f"{PLATEAU_EPOCHS} epochs): {'yes' if ok else 'no'}")


def _beats(x: dict, a: str, b: str, claim: str, blocked: str = "") -> Verdict:
    return Verdict(claim, paired(score(x, a), score(x, b)), pooled(score(x, a), score(x, b)),
                   unit=UNIT[x["metric"]], blocked=blocked)


def _within(x: dict, arm: str, who: str, blocked: str) -> Verdict:
    """Effect margin − (BP − arm): > 0 when ``arm`` is within the margin of BP."""
    m, text = MARGIN[x["metric"]]
    return Verdict(f"{who} is within {text}", [m - e for e in paired(score(x, "bp"), score(x, arm))],
                   pooled(score(x, "bp"), score(x, arm)), unit=UNIT[x["metric"]], blocked=blocked)


def _blocked(x: dict) -> str:
    return "" if bp_plateaued(x) else "BP had not reached its plateau"


def verdicts(task: str, x: dict) -> list[Verdict]:
    """The claims, written before any run, checked at r = d (criterion: stats.CRITERION)."""
    d, blocked = x["d"], _blocked(x)
    m, text = MARGIN[x["metric"]]
    out = [_within(x, f"ldfa-r{d}", f"ldfa (learned P, Q) at r = d = {d}", blocked),
           Verdict(f"fixed random rank-{d} feedback is not within {text} (effect (BP − fixed) − margin)",
                   [e - m for e in paired(score(x, "bp"), score(x, f"fixed-r{d}"))],
                   pooled(score(x, "bp"), score(x, f"fixed-r{d}")), unit=UNIT[x["metric"]], blocked=blocked),
           _beats(x, f"ldfa-r{d}", f"fixed-r{d}", f"learned rank-{d} feedback beats fixed random rank-{d} feedback"),
           _within(x, f"direct-r{d}", f"direct ldfa (rADFA) at r = d = {d}", blocked),
           _beats(x, f"direct-r{d}", "dfa", f"learned direct rank-{d} feedback beats dfa (fixed direct feedback of "
                                            f"rank d = C)")]
    if TASKS[task].sweep:
        out.append(_beats(x, f"ldfa-r{d}", "ldfa-r1", f"ldfa at r = d = {d} beats ldfa at r = 1"))
    if task == "cnn":
        out += [_beats(x, "bp", "fa", "the CNN resists FA: fa is behind BP", blocked),
                _beats(x, f"ldfa-r{d}", "fa", f"ldfa at r = d = {d} beats fa on the CNN"),
                _beats(x, f"direct-r{d}", "fa", f"direct ldfa at r = d = {d} beats fa on the CNN")]
    return out


def family_ranks(x: dict, family: str) -> list[str]:
    return [a[len(family) + 2:] for a in x["arms"] if a.startswith(family + "-r")]


def per_rank(x: dict) -> dict[str, dict[str, Verdict]]:
    """{family: {r: "the family at rank r is within the margin of BP (or better)"}}, every rank run."""
    blocked = _blocked(x)
    return {f: {r: _within(x, f"{f}-r{r}", f"{f} at r = {r}", blocked) for r in family_ranks(x, f)} for f in FAMILIES}


def checks(s: dict) -> dict:
    return {task: {"claims": [v.as_dict() for v in verdicts(task, x)],
                   "per_rank_within_margin_of_bp": {f: {r: v.as_dict() for r, v in vs.items()}
                                                    for f, vs in per_rank(x).items()}}
            for task, x in s.items()}


# --- tables and figure ----------------------------------------------------------------------


def _cell(x: dict, arm: str) -> str:
    """mean ± std over the seeds; "(n of N seeds)" where some did not run (interim results)."""
    if arm not in x["arms"]:
        return "—"
    vals = x["arms"][arm]["final"]
    cell = pm(vals, 2, 100) if x["metric"] == "test_acc" else pm(vals, 4)
    n = len(finite(vals))
    return cell if n == len(vals) else f"{cell} ({n} of {len(vals)} seeds)"


def _all_ranks(x: dict) -> list[str]:
    return list(dict.fromkeys(r for f in FAMILIES for r in family_ranks(x, f)))


def _value_table(x: dict) -> str:
    rows = [[r, _cell(x, f"ldfa-r{r}"), _cell(x, f"direct-r{r}"),
             _cell(x, "fa") + " (= fa)" if r == "full" else _cell(x, f"fixed-r{r}")] for r in _all_ranks(x)]
    return table(["r"] + list(FAMILIES.values()), rows)


def _verdict_table(x: dict) -> str:
    pr = per_rank(x)
    cell = lambda f, r: f"{pr[f][r].result} ({mean(pr[f][r].effects):+.2f})" if r in pr[f] else "—"
    rows = [[r] + [cell(f, r) for f in FAMILIES] for r in _all_ranks(x)]
    smallest = {f: next((r for r, v in pr[f].items() if v.result == "agrees"), "none") for f in FAMILIES}
    return (table(["r: within " + MARGIN[x["metric"]][1] + "? (mean effect)"] + list(FAMILIES), rows)
            + "\n\nSmallest r whose verdict agrees: " + "; ".join(f"{f}: {r}" for f, r in smallest.items()) + ".")


def markdown(s: dict) -> str:
    seeds = sorted({q for x in s.values() for q in x["seeds"]})
    parts = ["# Feedback dimensionality: learned (ldfa) against fixed rank-r feedback, with BP controls", "",
             f"{machine()}. Command: `python experiments/feedback_dimension.py`.", "",
             f"Every cell: mean ± std over seeds {', '.join(map(str, seeds))} (final epoch). SGD (momentum 0.9, "
             "lr 0.01, cosine to 0, L2 decay 1e-3, batch 128) for every arm. Families: "
             + "; ".join(FAMILIES.values()) + ". fixed at full rank is fa; direct ranks stop at d (P is r × C), "
             "and direct fixed feedback of rank d is dfa. Effects: test accuracy in points; teacher: "
             "−100·ln(test MSE) (1 = a 1 % MSE ratio); > 0 supports the claim. Within a margin of BP: "
             "effect = margin − (BP − rule). —: not run at that rank, or every seed diverged (named under Runs "
             "below); \"(n of N seeds)\": the other seeds diverged or did not run.", "",
             f"Verdict criterion (written before the runs): {CRITERION}.", ""]
    for task, x in s.items():
        what = "test accuracy %" if x["metric"] == "test_acc" else "test MSE"
        parts += [f"## {task}: {TASKS[task].title} (d = {x['d']}), {what}", "",
                  f"bp: {_cell(x, 'bp')}; fa: {_cell(x, 'fa')}; dfa: {_cell(x, 'dfa')}", "",
                  _value_table(x), "", _verdict_table(x), "", bp_plateau_text(x) + ".", "",
                  "### Claims", ""] + [v.line() for v in verdicts(task, x)] + [""]
    parts += ["![test accuracy and MSE against r](feedback_dimension.png)"]
    return "\n".join(parts)


def _natural(x: dict, arm: str) -> list[float]:
    scale = 100 if x["metric"] == "test_acc" else 1
    return [scale * v for v in finite(x["arms"].get(arm, {}).get("final", []))]


def figures(s: dict) -> dict:
    fig, axes = new_figure(len(s), 4.2, 3.2)
    for ax, (task, x) in zip(axes, s.items()):
        rs = _all_ranks(x)
        for i, f in enumerate(FAMILIES):
            have = [i_r for i_r, r in enumerate(rs) if f"{f}-r{r}" in x["arms"]]
            vals = [_natural(x, f"{f}-r{rs[j]}") for j in have]
            ax.errorbar(have, [mean(v) for v in vals], yerr=[std(v) for v in vals], marker="os^"[i], capsize=2,
                        color=f"C{i}", label=f)
        for j, (arm, ls) in enumerate((("bp", "--"), ("fa", ":"), ("dfa", "-."))):
            ax.axhline(mean(_natural(x, arm)), color="k" if arm == "bp" else f"C{j + 3}", ls=ls, lw=1, label=arm)
        ax.set_xticks(range(len(rs)), rs)
        ax.set(xlabel="feedback rank r", title=f"{task} (d = {x['d']})",
               ylabel="test accuracy %" if x["metric"] == "test_acc" else "test MSE")
        if x["metric"] == "test_loss":
            ax.set_yscale("log")
        ax.legend(fontsize=6)
    return {"": fig}  # feedback_dimension.png


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown, figures, checks=checks,
                   seeds=list(SEEDS), grid=[*GRID, "full"], criterion=CRITERION,
                   tasks={k: {"title": t.title, "overrides": list(t.overrides), "metric": t.metric}
                          for k, t in TASKS.items()})


if __name__ == "__main__":
    main()
