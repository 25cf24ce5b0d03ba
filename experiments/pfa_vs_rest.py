"""Product Feedback Alignment against the other rules (Li & Benna, "Deep learning without weight
symmetry", arXiv 2405.20594).

The paper's claim: PFA — errors sent back through B·R, B fixed and random (N_out × k·N_out,
k = 10), R learned by ∇R = Bᵀ∇W — tracks BP closely: its accuracy and its weight updates come
close to BP's, nearer than FA's, like the sign-symmetric and Kolen-Pollack rules do while
transporting no weights.

Here: bp, fa, usf, kp and pfa (k = 10) train the MLP (784-256-256-10) and LeNet-5 on
Fashion-MNIST in the setting of ``rule_zoo.py`` (5 epochs, SGD + decay, seeds 0 and 1). For each
layer, the angle between the rule's weight update ΔW and BP's on the same net and probe batch
(256 training images) is measured at every epoch's end.

    python experiments/pfa_vs_rest.py        # about 12 min on 2 CPU cores

writes experiments/results/pfa_vs_rest.{md,json} and pfa_vs_rest-<model>.png.
"""

from __future__ import annotations

from pathlib import Path

import rule_zoo
from common import curves_and_accuracy, diagnostics, final, fmt, layers, machine, mean, table

NAME = "pfa_vs_rest"
RULES = ["bp", "fa", "usf", "kp", "pfa"]


def summarise(dirs: dict[str, Path]) -> dict:
    """{model: {rule: {test_acc, angle_end {layer}, angle_curve {layer: [...]}, epochs}}}, seed means."""
    out: dict = {}
    for model in rule_zoo.MODELS:
        out[model] = {}
        for rule in RULES:
            runs = [d for k, d in dirs.items() if k.startswith(f"{model}-{rule}-s")]
            diags = [d for d in (diagnostics(r) for r in runs) if d]
            if not diags:
                continue
            names = layers(diags[0], "angle")
            n = min(len(d) for d in diags)
            curve = {l: [mean([d[i][f"angle/{l}"] for d in diags]) for i in range(n)] for l in names}
            out[model][rule] = {
                "test_acc": mean([final(r).get("test_acc", float("nan")) for r in runs]),
                "test_acc_seeds": [final(r).get("test_acc") for r in runs],
                "angle_end": {l: c[-1] for l, c in curve.items()},
                "angle_mean_hidden_end": mean([curve[l][-1] for l in names[:-1]]),
                "epochs": [diags[0][i]["epoch"] for i in range(n)], "angle_curve": curve, "layers": names,
            }
    return out


def claims(s: dict) -> list[str]:
    yes = lambda ok: "**yes**" if ok else "**no**"
    lines = []
    for model, v in s.items():
        if not {"bp", "fa", "pfa"} <= v.keys():
            continue
        acc = {r: 100 * x["test_acc"] for r, x in v.items()}
        ang = {r: x["angle_mean_hidden_end"] for r, x in v.items()}
        gap = acc["bp"] - acc["pfa"]
        lines.append(f"- {model}: pfa's accuracy within 1 point of bp's: {yes(gap <= 1.0)} "
                     f"({acc['pfa']:.2f} % vs {acc['bp']:.2f} %); above fa's: {yes(acc['pfa'] > acc['fa'])} "
                     f"({acc['fa']:.2f} %).")
        others = sorted((r for r in v if r not in ("bp", "pfa")), key=lambda r: ang[r])
        lines.append(f"- {model}: pfa's updates closer to BP's than fa's (mean hidden-layer angle at the end): "
                     f"{yes(ang['pfa'] < ang['fa'])} ({ang['pfa']:.1f}° vs {ang['fa']:.1f}°; "
                     + ", ".join(f"{r} {ang[r]:.1f}°" for r in others) + ").")
    return lines


def markdown(s: dict) -> str:
    parts = [f"# PFA vs the rest: {', '.join(rule_zoo.MODELS)} on Fashion-MNIST, {rule_zoo.EPOCHS} epochs, "
             f"seeds {list(rule_zoo.SEEDS)}", "", f"{machine()}. Command: `python experiments/pfa_vs_rest.py`.",
             "", "Test accuracy and the angle (degrees) between each layer's weight update under the rule and "
             "under BP, on the same weights and probe batch, after the last epoch; means over seeds. "
             "The output layer's update is BP's for every rule but dfa, so its angle is 0.", ""]
    for model, v in s.items():
        names = next(iter(v.values()))["layers"] if v else []
        rows = [[r, fmt(x["test_acc"], 2, 100), fmt(x["angle_mean_hidden_end"])] + [fmt(x["angle_end"][l]) for l in names]
                for r, x in v.items()]
        parts += [f"## {model}", "", table(["rule", "test acc %", "angle, hidden mean °"] + [f"∠ {l} °" for l in names], rows),
                  "", f"![angles over training](pfa_vs_rest-{model}.png)", ""]
    parts += ["## The paper's claim, checked", ""] + claims(s)
    return "\n".join(parts)


def figures(s: dict) -> dict:
    figs = {}
    for model, v in s.items():
        if not v:
            continue
        names = next(iter(v.values()))["layers"][:-1]
        fig = curves_and_accuracy(v, names, "epochs", "angle_curve", lambda n: f"∠(ΔW, ΔW_BP) at {n}", "epoch",
                                  marker="o", ms=3)
        for ax in fig.axes[:len(names)]:
            ax.set_ylim(bottom=0)
        fig.suptitle(f"{model}: angle to BP's update per layer (degrees), Fashion-MNIST")
        figs[model] = fig
    return figs


def main() -> None:
    rule_zoo.main(__doc__, NAME, RULES, summarise, markdown, figures)


if __name__ == "__main__":
    main()
