"""Rank collapse in feedback alignment, against depth, with BP controls for each remedy
(Boeshertz, Pascanu & Clopath, "Overcoming Rank Collapse in Feedback Alignment", arXiv 2606.11123).

The paper's claims, as checked here:

1. FA trains MLPs and shallow CNNs but falls further behind BP as depth grows;
2. with fixed random feedback the error signals δ_l reaching the hidden layers lose effective
   rank (relative to BP's), confining the updates to a small subspace;
3. orthogonalised updates (Muon) and hidden activity normalisation (batch norm) restore FA's
   accuracy and rank, and help FA more than they help BP (they are remedies for FA, not
   generic improvements).

Design. Two families with a depth axis, on the first 10 000 Fashion-MNIST training images (test:
all 10 000): MLPs with 2, 4 and 8 hidden layers (256 units, ReLU) and plain CNNs (``plaincnn``:
2, 4 and 8 3×3 conv layers of 16 channels, no skips, two 2×2 pools, a Linear head on the
16 × 7 × 7 features). At
every depth eight arms: fa, fa+muon, fa+norm, fa+muon+norm and their BP controls bp, bp+muon,
bp+norm, bp+muon+norm (norm = batch norm after every hidden layer; muon = Muon on hidden
matrices and kernels, AdamW elsewhere; the others Adam; lr 1e-3 annealed to 0 by a cosine over
10 epochs, batch 128), three seeds; a seed fixes the initial weights (shared by the arms of one
architecture), the feedback and the data order. The sizes are what fits 2 CPU cores in about
100 minutes. Pilot runs of BP alone (seed 0) chose them: at 8 epochs BP's test accuracy still
rose 0.5–0.6 points over the last two at depth 8 (MLP and CNN), short of the plateau criterion;
the first design (20 000 images, 5 epochs, a global-average-pool head) left BP off its plateau at
every MLP depth and the plain CNN at 56–62 % at depth 2. A difference of about a point is resolved where
the seed spread is below half a point. Effective rank (exp of the entropy of the
normalised singular values) of every layer's δ on a fixed probe of 256 training images, at step 0
and after each epoch; reported as its change from step 0, and that change relative to the
matching BP control. Verdicts by the criterion in ``stats.py`` at the deepest net, where the
paper says the effect is; BP's plateau is checked.

    python experiments/rank_collapse.py        # about 100 min on 2 CPU cores (--dataset cifar10: the paper's setting)

writes experiments/results/rank_collapse.{md,json} and rank_collapse-<family>.png.
"""

from __future__ import annotations

from pathlib import Path

from common import Arm, config, machine, read_run, new_figure, run_experiment, table
from stats import CRITERION, Verdict, mean, plateau_text, plateaued, pm, pooled, std

NAME = "rank_collapse"
FAMILIES = {  # label: (model, options other than depth, training samples, epochs)
    "mlp": ("mlp", "width: 256", 10000, 10),
    "cnn": ("plaincnn", "width: 16, head: flatten", 10000, 10),
}
DEPTHS = (2, 4, 8)
SCHEDULE = ["optim.schedule=cosine"]  # lr annealed to 0 over the run, so that BP can plateau in 10 epochs
RULES = ("bp", "fa")
REMEDIES = {"": [], "+muon": ["optim.name=muon"], "+norm": ["model.norm=batch"],
            "+muon+norm": ["optim.name=muon", "model.norm=batch"]}
SEEDS = (0, 1, 2)
QUICK_DEPTHS = (2, 4)


def arm_names() -> list[str]:
    return [rule + fix for rule in RULES for fix in REMEDIES]


def depths(quick: bool) -> tuple[int, ...]:
    return QUICK_DEPTHS if quick else DEPTHS


def arms(plan) -> list[Arm]:
    out = []
    for family, (model, options, n_train, epochs) in FAMILIES.items():
        for depth in depths(plan.quick):
            for rule in RULES:
                for fix, over in REMEDIES.items():
                    for seed in plan.pick_seeds(SEEDS):
                        subset = [] if plan.quick else [f"data.train_subset={n_train}"]
                        cfg = config("fashion-mnist.yaml", *plan.data(), *subset, f"model.name={model}",
                                     f"model.options={{depth: {depth}, {options}}}", f"rule={rule}", *over,
                                     *SCHEDULE, f"seed={seed}", f"epochs={epochs}", quick=plan.quick)
                        out.append(Arm(f"{family}{depth}-{rule}{fix}-s{seed}", cfg))
    return out


def hidden(entry: dict, names: list[str]) -> float:
    """Mean effective rank of δ over the hidden layers (all but the output layer)."""
    return mean([entry[f"erank/delta/{n}"] for n in names[:-1]])


def _run(run_dir: Path) -> dict | None:
    got = read_run(run_dir, "erank/delta")
    if got is None:
        return None
    base, diags = got
    first, last, names = diags[0], diags[-1], base["layers"]
    return {
        **base, "erank_start": hidden(first, names), "erank_end": hidden(last, names),
        "layer_start": {n: first[f"erank/delta/{n}"] for n in names},
        "layer_end": {n: last[f"erank/delta/{n}"] for n in names},
    }


def summarise(dirs: dict[str, Path]) -> dict:
    """{family: {depth: {arm: {per-seed lists}}}}."""
    out: dict = {}
    for family in FAMILIES:
        out[family] = {}
        found = sorted({int(k.split("-")[0][len(family):]) for k in dirs if k.startswith(family)
                        and k.split("-")[0][len(family):].isdigit()})
        for depth in found:
            cell = {}
            for arm in arm_names():
                runs = [r for k, d in sorted(dirs.items()) if k.startswith(f"{family}{depth}-{arm}-s")
                        for r in [_run(d)] if r is not None]
                if not runs:
                    continue
                names = runs[0]["layers"]
                cell[arm] = {
                    "seeds": len(runs),
                    "test_acc": [r["test_acc"] for r in runs], "acc_curve": [r["acc_curve"] for r in runs],
                    "erank_start": [r["erank_start"] for r in runs], "erank_end": [r["erank_end"] for r in runs],
                    "erank_change": [r["erank_end"] - r["erank_start"] for r in runs],
                    "layer_change": {n: [r["layer_end"][n] - r["layer_start"][n] for r in runs] for n in names},
                    "layers": names,
                }
            out[family][str(depth)] = cell
    return out


def _seeds(by_depth: dict) -> int:
    """The most seeds any arm has at any depth (the planned count, once one arm is complete)."""
    return max((c[a]["seeds"] for c in by_depth.values() for a in c), default=0)


def complete(by_depth: dict) -> list[str]:
    """The depths (ascending) at which every arm has as many seeds as the best-covered arm."""
    most = _seeds(by_depth)
    return [d for d in sorted(by_depth, key=int)
            if set(arm_names()) <= by_depth[d].keys() and all(x["seeds"] == most for x in by_depth[d].values())]


def cell(values: list[float], digits: int = 1, scale: float = 1.0, seeds: int = 0) -> str:
    """mean ± std, saying how many seeds where fewer than ``seeds`` (an interim report)."""
    return pm(values, digits, scale) + (f" ({len(values)} of {seeds} seeds)" if len(values) < seeds else "")


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def verdicts(s: dict) -> dict[str, list[Verdict]]:
    """The claims, checked at each family's shallowest and deepest net (criterion: stats.CRITERION)."""
    out = {}
    for family, by_depth in s.items():
        ds = complete(by_depth)
        if not ds:
            continue
        lo, hi = by_depth[ds[0]], by_depth[ds[-1]]
        acc = lambda c, a: c[a]["test_acc"]
        bp_ok = plateaued(hi["bp"]["acc_curve"]) and plateaued(lo["bp"]["acc_curve"])
        blocked = "" if bp_ok else "BP had not reached its plateau"
        gap_hi, gap_lo = _diff(acc(hi, "bp"), acc(hi, "fa")), _diff(acc(lo, "bp"), acc(lo, "fa"))
        pts = lambda xs: [100 * x for x in xs]
        v = [Verdict(f"FA is behind BP at depth {ds[-1]}", pts(gap_hi),
                     100 * pooled(acc(hi, "bp"), acc(hi, "fa")), blocked=blocked),
             Verdict(f"FA's gap to BP grows from depth {ds[0]} to {ds[-1]}", pts(_diff(gap_hi, gap_lo)),
                     100 * pooled(gap_hi, gap_lo), blocked=blocked)]
        for fix in list(REMEDIES)[1:]:
            gain_fa = _diff(acc(hi, "fa" + fix), acc(hi, "fa"))
            gain_bp = _diff(acc(hi, "bp" + fix), acc(hi, "bp"))
            v.append(Verdict(f"fa{fix} is more accurate than fa at depth {ds[-1]}", pts(gain_fa),
                             100 * pooled(acc(hi, "fa" + fix), acc(hi, "fa"))))
            v.append(Verdict(f"{fix[1:]} helps FA more than it helps BP at depth {ds[-1]}",
                             pts(_diff(gain_fa, gain_bp)),
                             100 * pooled(*(acc(hi, r + f) for r in RULES for f in ("", fix))), blocked=blocked))
        ch = lambda a: hi[a]["erank_change"]
        v.append(Verdict(f"FA's hidden error rank falls further from step 0 than BP's at depth {ds[-1]}",
                         _diff(ch("bp"), ch("fa")), pooled(ch("bp"), ch("fa")), unit="rank"))
        for fix in list(REMEDIES)[1:]:
            rel_fix, rel = _diff(ch("fa" + fix), ch("bp" + fix)), _diff(ch("fa"), ch("bp"))
            v.append(Verdict(f"{fix[1:]} raises FA's rank change relative to its BP control at depth {ds[-1]}",
                             _diff(rel_fix, rel), pooled(*(ch(r + f) for r in RULES for f in ("", fix))),
                             unit="rank"))
        out[family] = v
    return out


def _acc_table(by_depth: dict) -> str:
    ds, n = sorted(by_depth, key=int), _seeds(by_depth)
    rows = [[arm] + [cell(by_depth[d][arm]["test_acc"], 2, 100, n) if arm in by_depth[d] else "—" for d in ds]
            for arm in arm_names()]
    return table(["arm"] + [f"depth {d}" for d in ds], rows)


def _gap_table(by_depth: dict) -> str:
    ds = sorted(by_depth, key=int)
    rows = []
    for fix in REMEDIES:
        cells = []
        for d in ds:
            c = by_depth[d]
            ok = {"fa" + fix, "bp" + fix} <= c.keys()
            cells.append(pm([100 * x for x in _diff(c["fa" + fix]["test_acc"], c["bp" + fix]["test_acc"])], 2)
                         if ok else "—")
        rows.append([f"fa{fix} − bp{fix}"] + cells)
    return table(["accuracy gap (points)"] + [f"depth {d}" for d in ds], rows)


def _rank_table(by_depth: dict) -> str:
    ds = sorted(by_depth, key=int)
    rows = []
    for arm in arm_names():
        cells = []
        for d in ds:
            c = by_depth[d].get(arm)
            ctrl = by_depth[d].get("bp" + arm[2:])
            if c is None:
                cells.append("—")
                continue
            rel = "" if arm.startswith("bp") or ctrl is None else \
                f" (vs bp{arm[2:]}: {pm(_diff(c['erank_change'], ctrl['erank_change']))})"
            cells.append(f"{pm(c['erank_start'])} → {pm(c['erank_end'])}{rel}")
        rows.append([arm] + cells)
    return table(["arm: hidden erank of δ, step 0 → end (change vs BP control)"] + [f"depth {d}" for d in ds], rows)


def _layer_table(by_depth: dict) -> str:
    d = complete(by_depth)[-1]
    c = by_depth[d]
    names = next(iter(c.values()))["layers"]
    rows = []
    for arm in arm_names():
        ctrl = c.get("bp" + arm[2:])
        if arm not in c:
            continue
        rows.append([arm] + [pm(c[arm]["layer_change"][n]) + (
            "" if arm.startswith("bp") or ctrl is None
            else f" ({pm(_diff(c[arm]['layer_change'][n], ctrl['layer_change'][n]))})") for n in names])
    return (f"Per layer at depth {d}: change of δ's effective rank from step 0 (for FA arms, in brackets: "
            f"minus the matching BP control's change)\n\n" + table(["arm"] + names, rows))


def markdown(s: dict) -> str:
    parts = ["# Rank collapse against depth: FA and its remedies with BP controls (Fashion-MNIST)", "",
             f"{machine()}. Command: `python experiments/rank_collapse.py`.", "",
             "Every cell: mean ± std over seeds " + ", ".join(map(str, SEEDS)) + ". "
             + "; ".join(f"{f}: `{m}` ({o}), first {n} training images, {e} epochs"
                         for f, (m, o, n, e) in FAMILIES.items())
             + "; Adam or Muon, lr 1e-3 with a cosine to 0, batch 128. Effective rank of each layer's error signal δ on a fixed "
               "probe of 256 training images; *hidden* = the mean over all layers but the output layer.", "",
             f"Verdict criterion (written before the runs): {CRITERION}.", ""]
    for family, v in verdicts(s).items():
        by_depth = s[family]
        deepest = complete(by_depth)[-1]
        parts += [f"## {family}", "", "Test accuracy %", "", _acc_table(by_depth), "",
                  _gap_table(by_depth), "", _rank_table(by_depth), "", _layer_table(by_depth), "",
                  plateau_text(plateaued(by_depth[deepest]["bp"]["acc_curve"])) + f" (depth {deepest}).", "",
                  f"![accuracy and rank against depth](rank_collapse-{family}.png)", "",
                  "### Claims", ""] + [x.line() for x in v] + [""]
    return "\n".join(parts)


def figures(s: dict) -> dict:
    figs = {}
    for family, by_depth in s.items():
        ds = sorted(by_depth, key=int)
        if not ds:
            continue
        fig, (ax_acc, ax_rank) = new_figure(2, 4.4, 3.2)
        for i, arm in enumerate(arm_names()):
            have = [d for d in ds if arm in by_depth[d]]
            style = dict(color=f"C{i % 4}", ls="--" if arm.startswith("bp") else "-", marker="o", capsize=2,
                         label=arm)
            for ax, key, scale in ((ax_acc, "test_acc", 100), (ax_rank, "erank_change", 1)):
                vals = [[scale * x for x in by_depth[d][arm][key]] for d in have]
                ax.errorbar([int(d) for d in have], [mean(v) for v in vals], yerr=[std(v) for v in vals], **style)
        ax_acc.set(xlabel="depth", ylabel="test accuracy %", title=f"{family}: accuracy")
        ax_rank.set(xlabel="depth", ylabel="change of hidden erank of δ", title=f"{family}: rank change from step 0")
        ax_acc.legend(fontsize=6, ncol=2)
        figs[family] = fig
    return figs


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown,
                   figures, depths=list(DEPTHS), seeds=list(SEEDS), families={k: list(v) for k, v in FAMILIES.items()},
                   checks=lambda s: {f: [x.as_dict() for x in v] for f, v in verdicts(s).items()}, criterion=CRITERION)


if __name__ == "__main__":
    main()
