"""Representational alignment with BP, layer by layer (Lance & Kieu, "Biological Plausibility and
Representational Alignment of Feedback Alignment in Convolutional Networks", arXiv 2605.08564).

The paper's claims, as checked here:

1. nets trained with sign-concordant feedback (uSF-init, uSF-SN) converge to BP-like
   representations: their hidden layers' CKA to BP's net is high, near BP's own across seeds;
2. plain FA's nets (FA-random, FA-Toeplitz) stay apart: their CKA to BP is lower than the
   sign rules', and not merely because they are less accurate.

Design. The paper's architecture, Arch 1 (Moskovitz et al. 2018; ``arch1``: conv 64@5×5, pool,
conv 64@5×5, pool, FC 384, FC 192, head), on Fashion-MNIST (1×28×28 in: 28 → 14 → 7, so FC 384
reads 64·7·7), the first 2000 training images, 20 epochs (320 steps) for the rules and 30 for BP
(and its ceiling), Adam lr 1e-3, batch 128, no weight decay, seeds 0, 1, 2 (the paper: CIFAR-10
24×24 crops, 50 epochs, weight decay 1e-4 for BP only); a test-set pass after every 2nd epoch
and the last (``eval_every=2``), weights and batches in NHWC order (``channels_last``: the same
numbers to rounding, faster pools and convs on CPU).
Why these lengths: the first design (10 epochs for every arm) left BP still rising (+2.0 points
of seed-mean test accuracy over epochs 8–10), so every claim came out inconclusive. A probe of
BP alone in this setting (30 epochs, seeds 0–2, a test pass every epoch, 2026-12-01) had its
seed-mean test accuracy at 83.4 % after 10 epochs, 84.9 % after 20 and 85.1 % after 30, and met
the plateau criterion (``stats.plateaued``) at every epoch from 20 to 26 and from 28 to 30. The
second design trained every arm 20 epochs; its BP (in NHWC order, whose rounding gives another
trajectory than the probe's) missed the criterion: seed-mean +1.13 points over epochs 18–20
(+0.11, +2.50, +0.76 by seed; seed 1 dipped at epoch 18). So BP and its ceiling train 30
epochs, the probe's plateau, and the rules keep their 20: every claim compares a rule with BP
at its plateau. With a constant learning rate and batches seeded by (seed, epoch), a 30-epoch
BP run's first 20 epochs are the 20-epoch run's. The paper's five arms:

* ``bp``;
* ``fa-random``: ``fa`` with ``conv_feedback=untied``, an independent random kernel at every
  output position of a conv (a locally connected transpose; the paper's is a dense matrix per
  pair of positions, which alignlab does not offer), B ~ N(0, 0.01²), the paper's σ;
* ``fa-toeplitz``: ``fa`` with one shared kernel per conv (a transposed conv), N(0, 0.01²);
* ``usf-init``: ``frsf`` with ``init=normal, std=0.1``: B = |B₀| ⊙ sign(W), B₀ drawn once;
* ``usf-sn``: ``usf`` with ``scale=rms``: B = sign(W)·‖W‖_F/√numel(W).

Every arm trains twice per seed s: from BP's initial weights (seed s: *same init*) and from its
own (seed s + 1000: *own init*). A seed fixes the initial weights, the feedback and the data
order together (``build`` in ``alignlab.train.loop``; no config key seeds the weights alone), so
*own init* also changes the data order and the feedback. Each net is compared with BP's net of
seed s by the layer-wise debiased minibatch linear CKA (Nguyen, Raghu & Kornblith 2021) of every
converted layer's output (pre-activation) on the first 1000 test images, minibatches of 250.
*Hidden* CKA = the mean over conv2, fc1 and fc2: neither the head nor conv1, whose output is a
linear map of the image through 64 5×5 filters (more filters than a patch has pixels), so that
its linear CKA to any other such map is ≈ 1 whatever the weights (1.000 for the untrained net
in a --quick run); conv1 is reported, not averaged. Controls: the *ceiling* is BP at seed
s + 1000 against BP at seed s (independent init and data order, as the own-init rules have);
the *floor* is the untrained net (the initial weights of seed s, or s + 1000) against trained
BP at s.

CKA beyond accuracy: over the trained runs of one condition (the four rules' and, under own
init, the ceiling's BP), the least-squares line hidden CKA = a + b·(test accuracy) is fitted; a
run's *residual* is its hidden CKA minus the line's value at its accuracy. Pearson's r of
hidden CKA and accuracy over those runs is reported.

Claims (per-seed paired effects; verdicts by ``stats.CRITERION``; every claim is about BP's
representation, so all are blocked, i.e. inconclusive, unless BP reached its plateau):

* own init and same init: for each sign rule A (usf-init, usf-sn) and FA rule B (fa-random,
  fa-toeplitz), "A's hidden CKA to BP exceeds B's": CKA_A,s − CKA_B,s;
* own init and same init: "A's hidden CKA to BP exceeds the untrained net's (floor)":
  CKA_A,s − CKA_floor,s;
* own init: "A's hidden CKA to BP is below BP's across seeds (ceiling)": CKA_ceiling,s − CKA_A,s;
* own init: "A's hidden CKA to BP exceeds B's by more than accuracy predicts":
  resid_A,s − resid_B,s = (CKA_A,s − CKA_B,s) − b·(acc_A,s − acc_B,s);
* for each of the four rules: "starting from BP's initial weights raises its hidden CKA to
  BP": CKA_same,s − CKA_own,s.

Budget: Arch 1 has no width option and runs at its only width, which is slow on 2 CPU cores.
Measured in the full run (2026-12-01, 2 cores, NHWC): a 30-epoch BP run 245–250 s, a 20-epoch
sign-rule or fa-toeplitz run 147–228 s, a 20-epoch fa-random run (its per-position conv2
transpose dominates a step) 271–311 s (the tops of both ranges: seed-0 runs that shared the cores
with a test run); a test pass over the 10 000 test images ~7 s at eval
batch 250 (11.5 s in NCHW at batch 1000, ten of which per run were most of the first design's
time); one CKA pair ~6 s. 105.5 min of training for the 30 runs, and about 3 min of CKA.

    python experiments/representations.py        # about 110 min on 2 CPU cores

writes experiments/results/representations.{md,json} and representations-{layers,accuracy}.png.
"""

from __future__ import annotations

import math
from pathlib import Path

from common import Arm, config, final, machine, new_figure, run_experiment, table
from stats import CRITERION, Verdict, mean, plateau_text, plateaued, pm, pooled, std
from alignlab.train import rundir
from alignlab.train.config import config_from_dict
from alignlab.train.loop import build
from alignlab.train.similarity import layer_cka, load_trained

NAME = "representations"
ARMS = {  # label: the rule and its options
    "bp": ["rule=bp"],
    "fa-random": ["rule=fa", "rule_options.conv_feedback=untied", "rule_options.init=normal",
                  "rule_options.std=0.01"],
    "fa-toeplitz": ["rule=fa", "rule_options.init=normal", "rule_options.std=0.01"],
    "usf-init": ["rule=frsf", "rule_options.init=normal", "rule_options.std=0.1"],
    "usf-sn": ["rule=usf", "rule_options.scale=rms"],
}
RULES = [a for a in ARMS if a != "bp"]
SIGN, FA = ("usf-init", "usf-sn"), ("fa-random", "fa-toeplitz")
SEEDS = (0, 1, 2)
OWN = 1000          # own init: seed s + OWN
N_TRAIN, EPOCHS = 2000, 20
BP_EPOCHS = 30      # BP and its ceiling: trained to the plateau (see the docstring)
EVAL_EVERY = 2      # a test-set pass after every 2nd epoch (and the last): the plateau check's points
N_PROBE, PROBE_BATCH = 1000, 250
CONDITIONS = {"own": "own init", "same": "same init as BP"}
CEILING, FLOOR = "bp (ceiling)", "untrained (floor)"
COLORS = {row: f"C{i}" for i, row in enumerate(RULES + [CEILING, FLOOR])}


def arms(plan) -> list[Arm]:
    subset = [] if plan.quick else [f"data.train_subset={N_TRAIN}"]
    out = []
    for s in plan.pick_seeds(SEEDS):
        for seed in (s, s + OWN):
            for arm, over in ARMS.items():
                cfg = config("fashion-mnist.yaml", *plan.data(), *subset, "model.name=arch1", *over,
                             f"seed={seed}", f"epochs={BP_EPOCHS if arm == 'bp' else EPOCHS}", f"eval_every={EVAL_EVERY}", "eval_batch_size=250",
                             "channels_last=true", "diagnostics.enabled=false", quick=plan.quick)
                out.append(Arm(f"{arm}-s{seed}", cfg))
    return out


def rows(cond: str) -> list[str]:
    return RULES + ([CEILING] if cond == "own" else []) + [FLOOR]


def _seed_of(cond: str, s: int) -> int:
    return s + OWN if cond == "own" else s


def hidden(names: list[str]) -> list[str]:
    """The layers averaged as *hidden*: all but the first and the last."""
    return names[1:-1]


def _untrained(ref_dir: Path, seed: int):
    """BP's net built from the reference run's config with ``seed``: its initial weights."""
    cfg = config_from_dict(rundir.read_config(ref_dir))
    cfg.seed = seed
    return build(cfg).net.eval()


def _cka_of_seed(dirs: dict[str, Path], s: int) -> dict:
    """{cond: {row: {layer: CKA to BP of seed s}}}; rows whose run did not finish are absent."""
    ref_dir = dirs.get(f"bp-s{s}")
    if ref_dir is None or not rundir.is_done(ref_dir):
        return {}
    _, ref = load_trained(ref_dir)
    cka = lambda net: layer_cka(net, ref.net, ref.dataset, N_PROBE, PROBE_BATCH)
    out = {}
    for cond in CONDITIONS:
        seed = _seed_of(cond, s)
        found = {}
        for row in rows(cond)[:-1]:
            d = dirs.get(f"{'bp' if row == CEILING else row}-s{seed}")
            if d is not None and rundir.is_done(d):
                found[row] = cka(load_trained(d)[1].net)
        found[FLOOR] = cka(_untrained(ref_dir, seed))
        out[cond] = found
    return out


def _acc(dirs: dict[str, Path], label: str) -> float:
    d = dirs.get(label)
    return final(d).get("test_acc", math.nan) if d is not None else math.nan


def fit(points: list[tuple[float, float]]) -> dict:
    """Least squares y = a + b·x and Pearson's r over finite (x, y) points."""
    pts = [(x, y) for x, y in points if x == x and y == y]
    n = len(pts)
    if n < 2:
        return {"a": math.nan, "b": math.nan, "r": math.nan, "n": n}
    mx, my = mean([x for x, _ in pts]), mean([y for _, y in pts])
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    syy = sum((y - my) ** 2 for _, y in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    b = sxy / sxx if sxx > 0 else 0.0
    r = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan
    return {"a": my - b * mx, "b": b, "r": r, "n": n}


def _condition(dirs: dict[str, Path], per_seed: list[dict], seeds: list[int], cond: str, names: list[str]) -> dict:
    out = {}
    for row in rows(cond):
        found = [p.get(cond, {}).get(row) for p in per_seed]
        arm = "bp" if row == CEILING else row
        out[row] = {
            "cka": {n: [c[n] if c else math.nan for c in found] for n in names},
            "hidden": [mean([c[n] for n in hidden(names)]) if c else math.nan for c in found],
            "test_acc": [None if row == FLOOR else _acc(dirs, f"{arm}-s{_seed_of(cond, s)}") for s in seeds],
        }
    line = fit([(a, h) for row in rows(cond)[:-1] for a, h in zip(out[row]["test_acc"], out[row]["hidden"])])
    for row in rows(cond)[:-1]:
        x = out[row]
        x["residual"] = [h - (line["a"] + line["b"] * a) for a, h in zip(x["test_acc"], x["hidden"])]
    return {"rows": out, "fit": line}


def summarise(dirs: dict[str, Path]) -> dict:
    """{seeds, layers, bp {test_acc, acc_curve}, conditions {cond: {rows {row: per-seed lists}, fit}}}."""
    seeds = sorted(int(k[len("bp-s"):]) for k in dirs if k.startswith("bp-s") and int(k[len("bp-s"):]) < OWN)
    per_seed = [_cka_of_seed(dirs, s) for s in seeds]
    names = next((list(c[FLOOR]) for p in per_seed for c in p.values()), [])
    curves = [[m.get("test_acc") for m in rundir.read_lines(dirs[f"bp-s{s}"] / rundir.METRICS)] for s in seeds]
    return {"seeds": seeds, "layers": names,
            "bp": {"test_acc": [_acc(dirs, f"bp-s{s}") for s in seeds], "acc_curve": curves},
            "conditions": {cond: _condition(dirs, per_seed, seeds, cond, names) for cond in CONDITIONS}}


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def verdicts(s: dict) -> dict[str, list[Verdict]]:
    """The claims, written before any run (criterion: stats.CRITERION)."""
    blocked = "" if plateaued(s["bp"]["acc_curve"]) else "BP had not reached its plateau"
    out = {}
    for cond, title in CONDITIONS.items():
        r = s["conditions"][cond]["rows"]
        h = lambda row: r[row]["hidden"]
        res = lambda row: r[row]["residual"]
        v = [Verdict(f"{title}: {a}'s hidden CKA to BP exceeds {b}'s", _diff(h(a), h(b)), pooled(h(a), h(b)),
                     unit="CKA", blocked=blocked) for a in SIGN for b in FA]
        v += [Verdict(f"{title}: {a}'s hidden CKA to BP exceeds the untrained net's (floor)",
                      _diff(h(a), h(FLOOR)), pooled(h(a), h(FLOOR)), unit="CKA", blocked=blocked) for a in SIGN]
        if cond == "own":
            v += [Verdict(f"{title}: {a}'s hidden CKA to BP is below BP's across seeds (ceiling)",
                          _diff(h(CEILING), h(a)), pooled(h(CEILING), h(a)), unit="CKA", blocked=blocked)
                  for a in SIGN]
            v += [Verdict(f"{title}: {a}'s hidden CKA to BP exceeds {b}'s by more than accuracy predicts",
                          _diff(res(a), res(b)), pooled(res(a), res(b)), unit="CKA", blocked=blocked)
                  for a in SIGN for b in FA]
        out[cond] = v
    own, same = (s["conditions"][c]["rows"] for c in ("own", "same"))
    out["init"] = [Verdict(f"starting from BP's initial weights raises {a}'s hidden CKA to BP",
                           _diff(same[a]["hidden"], own[a]["hidden"]), pooled(same[a]["hidden"], own[a]["hidden"]),
                           unit="CKA", blocked=blocked) for a in RULES]
    return out


def _cka_table(c: dict, names: list[str]) -> str:
    r = c["rows"]
    body = [[row, pm(x["test_acc"], 2, 100), pm(x["hidden"], 3), pm(x.get("residual", []), 3)]
            + [pm(x["cka"][n], 3) for n in names] for row, x in r.items()]
    return table(["arm", "test acc %", "hidden CKA", "residual (CKA − line)"] + names, body)


def _fit_text(c: dict) -> str:
    f = c["fit"]
    return (f"Line over the {f['n']} trained runs: hidden CKA = {f['a']:.3f} + {f['b']:.3f} × accuracy "
            f"(accuracy as a fraction); Pearson r = {f['r']:.3f}.")


def _init_table(s: dict, names: list[str]) -> str:
    own, same = (s["conditions"][c]["rows"] for c in ("own", "same"))
    body = [[a, pm(_diff(same[a]["hidden"], own[a]["hidden"]), 3)]
            + [pm(_diff(same[a]["cka"][n], own[a]["cka"][n]), 3) for n in names] for a in RULES + [FLOOR]]
    return table(["same init − own init", "hidden"] + names, body)


def markdown(s: dict) -> str:
    names = s["layers"]
    v = verdicts(s)
    parts = ["# Representational alignment with BP: Arch 1 on Fashion-MNIST (Lance & Kieu's five arms)", "",
             f"{machine()}. Command: `python experiments/representations.py`.", "",
             f"Every cell: mean ± std over seeds {', '.join(map(str, s['seeds']))}. `arch1` (conv 64@5×5 ×2, "
             f"FC 384, 192, 10) on the first {N_TRAIN} training images, {EPOCHS} epochs for the rules and "
             f"{BP_EPOCHS} for BP and its ceiling (a test-set pass every "
             f"{EVAL_EVERY} epochs and after the last; NHWC memory order), Adam lr 1e-3, batch 128. "
             "fa-random: fa with an independent N(0, 0.01²) kernel per output position; fa-toeplitz: one shared "
             "N(0, 0.01²) kernel; usf-init: frsf, |B₀| ⊙ sign(W), B₀ ~ N(0, 0.1²); usf-sn: usf, scale rms. "
             f"CKA: debiased minibatch linear CKA of each layer's output to BP's net of the same seed s on the "
             f"first {N_PROBE} test images (minibatches of {PROBE_BATCH}); *hidden* = mean over "
             f"{', '.join(hidden(names))} (conv1 is left out: a linear map of the image through more filters "
             "than a patch has pixels, its linear CKA is ≈ 1 whatever the weights; see the floor). "
             f"*Own init*: the rule trained at seed s + {OWN} (other weights, feedback and data order); "
             f"*same init*: at seed s, BP's initial weights. {CEILING}: BP at seed s + {OWN}; "
             f"{FLOOR}: the initial weights, untrained. Residual: hidden CKA minus the least-squares line of "
             "hidden CKA on test accuracy over the condition's trained runs.", "",
             f"BP's test accuracy: {pm(s['bp']['test_acc'], 2, 100)} %. "
             + plateau_text(plateaued(s["bp"]["acc_curve"])) + ".", "",
             f"Verdict criterion (written before the runs): {CRITERION}.", ""]
    for cond, title in CONDITIONS.items():
        c = s["conditions"][cond]
        parts += [f"## CKA to BP, {title}", "", _cka_table(c, names), "", _fit_text(c), "",
                  "### Claims", ""] + [x.line(3) for x in v[cond]] + [""]
    parts += ["## What sharing BP's initial weights adds", "", _init_table(s, names), "", "### Claims", ""]
    parts += [x.line(3) for x in v["init"]] + ["",
              "![CKA to BP per layer](representations-layers.png)", "",
              "![hidden CKA against test accuracy](representations-accuracy.png)"]
    return "\n".join(parts)


def _layers_figure(s: dict):
    names = s["layers"]
    fig, axes = new_figure(len(CONDITIONS), 4.4, 3.2)
    for ax, (cond, title) in zip(axes, CONDITIONS.items()):
        for row, x in s["conditions"][cond]["rows"].items():
            ls = "--" if row == CEILING else ":" if row == FLOOR else "-"
            ax.errorbar(names, [mean(x["cka"][n]) for n in names], yerr=[std(x["cka"][n]) for n in names],
                        marker="o", ls=ls, capsize=2, color=COLORS[row], label=row)
        ax.set_ylim(top=1.005)
        ax.set(ylabel="CKA to BP's layer", title=f"CKA to BP, {title}")
    axes[0].legend(fontsize=7)
    return fig


def _accuracy_figure(s: dict):
    fig, (ax,) = new_figure(1, 5.0, 3.6)
    for cond, marker in zip(CONDITIONS, "os"):
        c = s["conditions"][cond]
        for row in rows(cond)[:-1]:
            x = c["rows"][row]
            ax.scatter([100 * a for a in x["test_acc"]], x["hidden"], color=COLORS[row], marker=marker,
                       label=f"{row}, {CONDITIONS[cond]}")
        f, accs = c["fit"], [a for row in rows(cond)[:-1] for a in c["rows"][row]["test_acc"] if a == a]
        if accs and f["b"] == f["b"]:
            xs = [min(accs), max(accs)]
            ax.plot([100 * a for a in xs], [f["a"] + f["b"] * a for a in xs], color="grey",
                    ls="-" if cond == "own" else "--")
    ax.set(xlabel="test accuracy %", ylabel="hidden CKA to BP", title="hidden CKA against accuracy (one point per run)")
    ax.legend(fontsize=6)
    return fig


def figures(s: dict) -> dict:
    if not s["layers"]:
        return {}
    return {"layers": _layers_figure(s), "accuracy": _accuracy_figure(s)}


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown, figures,
                   seeds=list(SEEDS), own_init_offset=OWN, arms=ARMS, train_subset=N_TRAIN, epochs=EPOCHS,
                   bp_epochs=BP_EPOCHS, eval_every=EVAL_EVERY,
                   probe=f"first {N_PROBE} test images, minibatches of {PROBE_BATCH}",
                   checks=lambda s: {k: [x.as_dict() for x in v] for k, v in verdicts(s).items()},
                   criterion=CRITERION)


if __name__ == "__main__":
    main()
