"""Product Feedback Alignment against BP, FA, sign-symmetry and Kolen-Pollack, in the authors'
weight-decay regime (Li & Benna, "Deep learning without weight symmetry", arXiv 2405.20594).

PFA sends errors back through B·R: B fixed and random (N_out × k·N_out, k = 10), R learned by
∇R = Bᵀ∇W with W's weight decay, so that B·R → W. The paper's claims, as checked here, per model:

1. PFA's test accuracy is within 1 point of BP's (effect = 1 − (BP − PFA) points; needs BP at
   its plateau), and above FA's;
2. PFA's weight updates are closer to BP's than FA's are (hidden-layer update angle to BP);
3. ... about as close as Kolen-Pollack's, which aligns its feedback by the same decay: PFA's
   angle is at most 5° larger than KP's (effect = 5° − (∠PFA − ∠KP); a tolerance fixed before
   the runs, like the 1-point one of claim 1);
4. the decay is what aligns B·R with W: with the authors' decay ∠(B·R, W) ends smaller than
   with a constant small decay (arm pfa-const), and smaller than FA's ∠(B, W).

Design. bp, fa, usf, kp, pfa and the control pfa-const on three models of Fashion-MNIST: the MLP
784-256-256-10 and LeNet-5 on all 60000 training images for 10 epochs, and a deeper CNN,
``plaincnn`` (6 3×3 conv layers of 16 channels with batch norm, no skips, global average pool),
on the first 20000 for 12 epochs; seeds 0, 1, 2. A seed fixes the initial weights (the same for
every rule of one model), the feedback and the data order. SGD (momentum 0.9, cosine to 0,
batch 128) with L2 decay on matrices, kernels and the learned feedback (PFA's R, KP's B), in the
authors' regime (their PFA ``tfawd`` configs, jil095/product_feedback_alignment,
``exp_configs``): a large λ₀ for one epoch of the whole training set, then λ = 1e-4 — the decay
of every authors' config after epoch 1 and of their BP and FA runs. Every rule gets it, so that
the rules differ only in their backward pass. The MLP and LeNet follow the authors' MNIST MLP
(lr 0.01 at batch 64, λ₀ 0.03 for 938 steps), the batch-normed CNN their CIFAR-10 ResNet-20
(lr 0.1 at batch 128, λ₀ 0.005 for 391 steps); the lr is scaled linearly to batch 128 (0.02,
0.1) and λ₀ set so that the large-decay phase shrinks the mismatch B·R − W by the authors'
factor exp(η λ₀ S / (1 − μ)) (S steps; 16.7 on MNIST, 7.1 on CIFAR-10): λ₀ = 0.030 for 1
epoch of 469 steps (mlp, lenet: the authors' value), 0.0042 for 3 epochs of 157 steps (the
CNN). pfa-const: PFA with λ = 1e-4 from the start, the control for claim 4. At step 0 and after
every epoch, on a fixed probe of 256 training images: the angle between each layer's update
under the rule and BP's update on the same weights (``angle/<layer>``; *hidden* = every layer
but the output layer, whose update is exact), and the angle between each layer's feedback
matrix and W (``walign/<layer>``: ∠(B·R, W) for pfa, ∠(B, W) for fa, usf, kp; *feedback* =
every layer but the first, whose feedback carries no error). Verdicts by the criterion in
``stats.py`` on per-seed paired effects; BP's plateau is checked per model.

Cost: PFA's k = 10 backward makes an MLP run about 5× BP's (135 s against 28 s). The sizes
were chosen for about 95 min on 2 quiet CPU cores from per-step times; the full run of
2026-11-30 took 120 min of training (mlp 20, lenet 52, plaincnn6 48): evaluation and the
per-epoch diagnostics cost more than estimated.

    python experiments/pfa_vs_rest.py        # about 2 hours on 2 CPU cores

writes experiments/results/pfa_vs_rest.{md,json} and pfa_vs_rest-<model>.png.
"""

from __future__ import annotations

import math
from pathlib import Path

from common import Arm, config, machine, read_run, new_figure, run_experiment, table
from stats import CRITERION, Verdict, mean, plateau_text, plateaued, pm, pooled, std

NAME = "pfa_vs_rest"
MODELS = {  # label: (model, its overrides, training images, epochs, the authors' regime it follows)
    "mlp": ("mlp", [], 60000, 10, "mnist"),
    "lenet": ("lenet", [], 60000, 10, "mnist"),
    "plaincnn6": ("plaincnn", ["model.options={depth: 6, width: 16}", "model.norm=batch"], 20000, 12, "cifar10"),
}
REGIMES = {  # the authors' PFA (tfawd) configs: lr, batch, first-epoch λ₀, steps of that epoch
    "mnist": (0.01, 64, 0.03, 938),     # exp_configs/mnist_ffn2_bsparse_sgd: MLP 512-512
    "cifar10": (0.1, 128, 0.005, 391),  # exp_configs/cifar10_resnet20_sgd: ResNet-20 (batch norm)
}
RULES = ("bp", "fa", "usf", "kp", "pfa")
CONTROL = "pfa-const"  # pfa under a constant λ = LATER_DECAY: the control for the decay claim
ARMS = RULES + (CONTROL,)
SEEDS = (0, 1, 2)
MOMENTUM, BATCH = 0.9, 128  # the authors' momentum and CIFAR-10 batch
LARGE_PHASE = 60000  # samples under λ₀: one epoch of the whole training set, as the authors do
LATER_DECAY = 1e-4  # λ afterwards (authors: 0.03 × 0.003 on MNIST, 0.005 × 0.02 on CIFAR-10; their BP's λ)
DATASET_SIZE = {"fashion-mnist": 60000, "cifar10": 50000, "cifar100": 50000}
ACC_MARGIN = 1.0   # points: "within 1 point of BP"
ANGLE_MARGIN = 5.0  # degrees: "at most 5° larger than KP's"


def shrink_exponent(regime: str) -> float:
    """η λ₀ S / (1 − μ) of the authors' first epoch: its decay shrinks B·R − W by e^this."""
    lr, _, lam, steps = REGIMES[regime]
    return lr * lam * steps / (1 - MOMENTUM)


def learning_rate(regime: str) -> float:
    """The authors' lr, scaled linearly from their batch to BATCH."""
    lr, batch, _, _ = REGIMES[regime]
    return lr * BATCH / batch


def high_epochs(n_train: int) -> int:
    """Epochs under λ₀: those of the first LARGE_PHASE samples."""
    return max(1, round(LARGE_PHASE / n_train))


def first_decay(n_train: int, regime: str) -> float:
    """λ₀ whose high_epochs of ⌈n_train / BATCH⌉ steps shrink B·R − W as the authors' first epoch does."""
    lr = learning_rate(regime)
    return shrink_exponent(regime) * (1 - MOMENTUM) / (lr * high_epochs(n_train) * math.ceil(n_train / BATCH))


def decay(arm: str, n_train: int, regime: str) -> list[str]:
    if arm == CONTROL:
        return [f"optim.weight_decay={LATER_DECAY}"]
    lam = first_decay(n_train, regime)
    schedule = ", ".join(["1"] * high_epochs(n_train) + [f"{LATER_DECAY / lam:.4e}"])
    return [f"optim.weight_decay={lam:.4e}", f"optim.decay_schedule=[{schedule}]"]


def arms(plan) -> list[Arm]:
    out = []
    for label, (model, overrides, n_train, epochs, regime) in MODELS.items():
        n = min(n_train, DATASET_SIZE[plan.dataset])
        for arm in ARMS:
            for seed in plan.pick_seeds(SEEDS):
                subset = [] if plan.quick else [f"data.train_subset={n}"]
                cfg = config("fashion-mnist.yaml", *plan.data(), *subset, f"model.name={model}", *overrides,
                             f"rule={arm.split('-')[0]}", *decay(arm, n, regime), "optim.name=sgd",
                             f"optim.lr={learning_rate(regime):g}", f"optim.momentum={MOMENTUM}", "optim.schedule=cosine",
                             f"batch_size={BATCH}", f"seed={seed}", f"epochs={epochs}", quick=plan.quick)
                out.append(Arm(f"{label}-{arm}-s{seed}", cfg))
    return out


def _curve(diags: list[dict], prefix: str, names: list[str]) -> list[float]:
    """The mean over ``names`` of ``prefix/<layer>`` at every measurement (empty when unmeasured)."""
    if not all(f"{prefix}/{n}" in diags[0] for n in names):
        return []
    return [mean([d[f"{prefix}/{n}"] for n in names]) for d in diags]


def _run(run_dir: Path) -> dict | None:
    got = read_run(run_dir, "angle")
    if got is None:
        return None
    base, diags = got
    names, last = base["layers"], diags[-1]
    return {
        **base, "epochs": [d["epoch"] for d in diags],
        "angle_curve": _curve(diags, "angle", names[:-1]), "walign_curve": _curve(diags, "walign", names[1:]),
        "angle_layer": {n: last[f"angle/{n}"] for n in names},
        "walign_layer": {n: last[f"walign/{n}"] for n in names if f"walign/{n}" in last},
    }


def _cell(runs: list[dict], high: int) -> dict:
    """Per-seed lists of one arm (curves, ends; the feedback alignment also at step 0 and after
    the ``high`` epochs of large decay)."""
    walign = [r["walign_curve"] for r in runs if r["walign_curve"]]
    return {
        "seeds": len(runs), "layers": runs[0]["layers"], "epochs": runs[0]["epochs"],
        "test_acc": [r["test_acc"] for r in runs], "acc_curve": [r["acc_curve"] for r in runs],
        "angle": [r["angle_curve"][-1] for r in runs], "angle_curve": [r["angle_curve"] for r in runs],
        "angle_layer": {n: [r["angle_layer"][n] for r in runs] for n in runs[0]["angle_layer"]},
        "walign": [c[-1] for c in walign], "walign_start": [c[0] for c in walign],
        "walign_phase": [c[high] for c in walign if len(c) > high], "walign_curve": walign,
        "walign_layer": {n: [r["walign_layer"][n] for r in runs] for n in runs[0]["walign_layer"]},
    }


def summarise(dirs: dict[str, Path]) -> dict:
    """{model: {"bp_plateaued": bool, "seeds": [...], "arms": {arm: per-seed lists}}}: the per-seed
    lists of every arm of a model run over the same seeds, in order (the effects pair them), so a
    seed that one arm lacks (a diverged run; an unfinished one under --report-only) is left out
    of that model's every arm, and ``seeds`` says which were used."""
    out = {}
    for label in MODELS:
        runs = {arm: {int(k.rsplit("-s", 1)[1]): r for k, d in dirs.items() if k.startswith(f"{label}-{arm}-s")
                      for r in [_run(d)] if r} for arm in ARMS}
        runs = {arm: by_seed for arm, by_seed in runs.items() if by_seed}
        common = sorted(set.intersection(*(set(v) for v in runs.values()))) if runs else []
        if not common:
            continue
        cells = {arm: _cell([by_seed[q] for q in common], high_epochs(MODELS[label][2])) for arm, by_seed in runs.items()}
        bp = cells.get("bp", {}).get("acc_curve", [])
        every = sorted(set().union(*(set(v) for v in runs.values())))
        out[label] = {"bp_plateaued": plateaued(bp), "seeds": common,
                      "seeds_left_out": [q for q in every if q not in common], "arms": cells}
    return out


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def verdicts(s: dict) -> dict[str, list[Verdict]]:
    """The claims of the docstring, per model (criterion: stats.CRITERION)."""
    out = {}
    for label, m in s.items():
        c = m["arms"]
        if not set(ARMS) <= c.keys():
            continue
        acc = lambda a: [100 * x for x in c[a]["test_acc"]]
        ang = lambda a: c[a]["angle"]
        wal = lambda a: c[a]["walign"]
        blocked = "" if m["bp_plateaued"] else "BP had not reached its plateau"
        out[label] = [
            Verdict(f"PFA's test accuracy is within {ACC_MARGIN:g} point of BP's (effect = {ACC_MARGIN:g} − "
                    "(BP − PFA))", [ACC_MARGIN - x for x in _diff(acc("bp"), acc("pfa"))],
                    pooled(acc("bp"), acc("pfa")), blocked=blocked),
            Verdict("PFA is more accurate than FA", _diff(acc("pfa"), acc("fa")), pooled(acc("pfa"), acc("fa"))),
            Verdict("PFA's hidden-layer update angle to BP is smaller than FA's", _diff(ang("fa"), ang("pfa")),
                    pooled(ang("fa"), ang("pfa")), unit="°"),
            Verdict(f"PFA's hidden-layer update angle to BP is at most {ANGLE_MARGIN:g}° larger than KP's "
                    f"(effect = {ANGLE_MARGIN:g}° − (∠PFA − ∠KP))",
                    [ANGLE_MARGIN - x for x in _diff(ang("pfa"), ang("kp"))], pooled(ang("pfa"), ang("kp")), unit="°"),
            Verdict(f"the authors' decay aligns B·R with W: ∠(B·R, W) ends smaller than under a constant "
                    f"λ = {LATER_DECAY:g} ({CONTROL})", _diff(wal(CONTROL), wal("pfa")),
                    pooled(wal(CONTROL), wal("pfa")), unit="°"),
            Verdict("PFA's ∠(B·R, W) ends smaller than FA's ∠(B, W)", _diff(wal("fa"), wal("pfa")),
                    pooled(wal("fa"), wal("pfa")), unit="°"),
        ]
    return out


def _acc_table(c: dict) -> str:
    names = next(iter(c.values()))["layers"][:-1]
    rows = [[a, pm(x["test_acc"], 2, 100), pm(x["angle"])] + [pm(x["angle_layer"][n]) for n in names]
            for a, x in c.items()]
    return table(["arm", "test acc %", "∠ to BP, hidden mean °"] + [f"∠ {n} °" for n in names], rows)


def _walign_table(c: dict) -> str:
    names = next(iter(c.values()))["layers"]
    rows = [[a, pm(x["walign_start"]), pm(x["walign_phase"]), pm(x["walign"])]
            + [pm(x["walign_layer"].get(n, [])) for n in names] for a, x in c.items() if a != "bp" and x["walign"]]
    return table(["arm", "feedback mean, step 0 °", "after the large decay °", "end °"]
                 + [f"end {n} °" for n in names], rows)


def _epoch_table(c: dict, key: str, skip: tuple[str, ...]) -> str:
    """Seed mean ± std of ``key`` (one curve per seed) at every measurement, one row per arm."""
    x = next(iter(c.values()))["epochs"]
    rows = [[a] + [pm([curve[i] for curve in v[key] if len(curve) > i]) for i in range(len(x))]
            for a, v in c.items() if a not in skip and v[key]]
    return table(["arm"] + [f"epoch {e}" for e in x], rows)


def design() -> str:
    sizes = "; ".join(
        f"{k}: `{m}`{' (' + ', '.join(o) + ')' if o else ''}, {n} training images, {e} epochs, lr {learning_rate(r):g}, "
        f"λ₀ = {first_decay(n, r):.2g} for {high_epochs(n)} epoch(s) (the authors' {r} regime: shrink "
        f"e^{shrink_exponent(r):.2f} ≈ {math.exp(shrink_exponent(r)):.1f})" for k, (m, o, n, e, r) in MODELS.items())
    return (f"Every cell: mean ± std over seeds {', '.join(map(str, SEEDS))}. {sizes}. SGD, momentum {MOMENTUM}, "
            f"cosine to 0, batch {BATCH}; L2 decay λ₀ over the first {LARGE_PHASE} samples, then {LATER_DECAY:g} "
            f"(the authors' regime; λ₀ set so that this phase shrinks B·R − W by the authors' first-epoch factor), "
            f"for every rule; {CONTROL}: pfa with λ = {LATER_DECAY:g} throughout. ∠ to BP: angle between the "
            "layer's update under the rule and BP's on the same weights and probe batch (256 training images); "
            "*hidden* = all layers but the output layer (whose update is exact). ∠(B, W): the layer's feedback "
            "matrix (pfa: B·R) against W; *feedback mean* = all layers but the first (whose feedback carries no "
            "error).")


def markdown(s: dict) -> str:
    parts = ["# PFA against BP, FA, uSF and KP in the authors' weight-decay regime (Fashion-MNIST)", "",
             f"{machine()}. Command: `python experiments/pfa_vs_rest.py`.", "", design(), "",
             f"Verdict criterion (written before the runs): {CRITERION}.", ""]
    checked = verdicts(s)
    for label, m in s.items():
        c = m["arms"]
        seeds = "" if not m["seeds_left_out"] else (
            f"Seeds {', '.join(map(str, m['seeds']))} only: seed(s) {', '.join(map(str, m['seeds_left_out']))} "
            "lack a finished run of some arm (named under Runs), so every arm leaves them out.")
        parts += [f"## {label}", "", *([seeds, ""] if seeds else []),
                  "Test accuracy and update angle to BP at the end", "", _acc_table(c), "",
                  "Feedback alignment ∠(B, W) (pfa: path alignment ∠(B·R, W))", "", _walign_table(c), "",
                  "Over epochs: update angle to BP, hidden mean °", "", _epoch_table(c, "angle_curve", ("bp",)), "",
                  "Over epochs: ∠(B, W) (pfa: ∠(B·R, W)), feedback mean °", "",
                  _epoch_table(c, "walign_curve", ("bp",)), "",
                  plateau_text(m["bp_plateaued"]) + ".", "", f"![over epochs](pfa_vs_rest-{label}.png)", "",
                  "### Claims", ""] + [v.line() for v in checked.get(label, [])] + [""]
    return "\n".join(parts)


def _band(ax, x: list, curves: list[list[float | None]], scale: float, **style) -> None:
    """Seed mean ± std per point; a point some seed did not measure (no test pass) is left out."""
    n = min(len(c) for c in curves)
    keep = [i for i in range(n) if all(c[i] is not None for c in curves)]
    xs = [x[len(x) - n + i] for i in keep]
    mid = [mean([scale * c[i] for c in curves]) for i in keep]
    sd = [std([scale * c[i] for c in curves]) for i in keep]
    ax.plot(xs, mid, marker="o", ms=3, **style)
    ax.fill_between(xs, [a - b for a, b in zip(mid, sd)], [a + b for a, b in zip(mid, sd)], alpha=0.2,
                    color=style["color"])


def figures(s: dict) -> dict:
    figs = {}
    for label, m in s.items():
        fig, axes = new_figure(3, 4.0, 3.0)
        panels = (("acc_curve", 100, "test accuracy %"), ("angle_curve", 1, "∠ to BP's update, hidden mean °"),
                  ("walign_curve", 1, "∠(B, W) (pfa: B·R), feedback mean °"))
        for i, (arm, x) in enumerate(m["arms"].items()):
            style = dict(color=f"C{i}", label=arm, ls="--" if arm == CONTROL else "-")
            for ax, (key, scale, title) in zip(axes, panels):
                if x[key] and not (key == "walign_curve" and arm == "bp"):
                    _band(ax, x["epochs"], x[key], scale, **style)
                ax.set(xlabel="epoch", title=title)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{label}: mean ± std over seeds")
        figs[label] = fig
    return figs


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown, figures,
                   checks=lambda s: {k: [v.as_dict() for v in vs] for k, vs in verdicts(s).items()},
                   criterion=CRITERION, seeds=list(SEEDS), models={k: list(v) for k, v in MODELS.items()},
                   regimes={k: list(v) for k, v in REGIMES.items()}, later_decay=LATER_DECAY)


if __name__ == "__main__":
    main()
